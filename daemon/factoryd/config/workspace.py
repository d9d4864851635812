"""Reading a task's `workspace` table: every problem named by its key path.

The same reader serves `[[tasks]]`, `[[templates]]` and submissions (whose
`--set workspace.keep=...` overrides one key of a template's workspace), so
a mistake reads the same wherever it was made:
``tasks[2].workspace.hooks.after_run.timeout: expected a duration ...``.
It records problems on the table's owner and never raises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from factoryd.config.tomltable import MISSING, Table, describe
from factoryd.core.workspace_spec import (
    DEFAULT_BRANCH,
    DEFAULT_HOOK_TIMEOUT,
    DEFAULT_MESSAGE,
    HOOK_NAMES,
    Hook,
    Hooks,
    Keep,
    WorkspaceSpec,
    parse_author,
    pattern_problem,
)


def read_workspace(
    parent: Table,
    key: str = "workspace",
    base: WorkspaceSpec | None = None,
    resolve: Callable[[str], str] = str,
) -> WorkspaceSpec | None:
    """The workspace of a task table (`parent`), or `base` (a template's) when absent.

    `workspace = false` turns a template's workspace off. `resolve` makes a
    relative path absolute (the loader's: relative to the config file).
    """
    raw = parent.raw(key)
    if raw is MISSING:
        return base
    if raw is False:
        return None
    if not isinstance(raw, dict):
        parent.problem(
            key,
            f'expected a table such as {{ repo = "/srv/src/app" }} or false, got {describe(raw)}',
        )
        return base
    t = parent.sub(key)
    b = base
    repo = t.string("repo", b.repo if b else MISSING)
    ref = t.string("ref", b.ref if b else "HEAD")
    if isinstance(ref, str) and (not ref or ref.startswith("-") or "\0" in ref):
        t.problem("ref", f"expected a commit, branch or tag name, got {ref!r}")
        ref = "HEAD"
    branch = t.string("branch", b.branch if b else DEFAULT_BRANCH)
    if isinstance(branch, str) and (problem := pattern_problem(branch)):
        t.problem("branch", problem)
    keep = t.string("keep", str(b.keep) if b else str(Keep.ON_SUCCESS), [k.value for k in Keep])
    root = t.string("root", None)
    author = t.string("author", None)
    name, email = (b.author_name, b.author_email) if b else ("factoryd", "factoryd@localhost")
    if isinstance(author, str):
        parsed = parse_author(author)
        if parsed is None:
            t.problem("author", f"expected 'Name <email>', got {author!r}")
        else:
            name, email = parsed
    message = t.string("message", b.message if b else DEFAULT_MESSAGE)
    if isinstance(message, str) and not message.strip():
        t.problem("message", "must not be empty")
    hooks = _hooks(t, b.hooks if b else Hooks())
    success_check = t.boolean("success_check", b.success_check if b else False)
    if success_check and hooks.after_run is None:
        t.problem("success_check", "needs hooks.after_run (its exit status is the verdict)")
    t.done()
    if not isinstance(repo, str) or not repo:
        if isinstance(repo, str):
            t.problem("repo", "must not be empty")
        return base
    return WorkspaceSpec(
        repo=resolve(repo),
        ref=ref if isinstance(ref, str) else "HEAD",
        branch=branch if isinstance(branch, str) else DEFAULT_BRANCH,
        keep=Keep(keep) if isinstance(keep, str) else Keep.ON_SUCCESS,
        root=resolve(root) if isinstance(root, str) else (b.root if b else None),
        author_name=name,
        author_email=email,
        message=message if isinstance(message, str) and message.strip() else DEFAULT_MESSAGE,
        hooks=hooks,
        success_check=bool(success_check),
    )


def _hooks(t: Table, base: Hooks) -> Hooks:
    if t.raw("hooks") is MISSING:
        return base
    h = t.sub("hooks")
    found = {name: _hook(h, name, getattr(base, name)) for name in HOOK_NAMES}
    h.done()
    return replace(base, **found)


def _hook(h: Table, name: str, base: Hook | None) -> Hook | None:
    """A hook: `["make", "deps"]`, or `{ argv = [...], timeout = "5m" }`, or false."""
    raw = h.raw(name)
    if raw is MISSING:
        return base
    if raw is False:
        return None
    if isinstance(raw, list):
        where, key = h, name
        argv = h.str_list(name)
        timeout = DEFAULT_HOOK_TIMEOUT
    elif isinstance(raw, dict):
        where, key = h.sub(name), "argv"
        argv = where.str_list("argv")
        if "argv" not in raw:
            where.problem("argv", "is required (a list of strings: the program and its arguments)")
        timeout = where.duration("timeout", DEFAULT_HOOK_TIMEOUT)
        if timeout == 0:
            where.problem("timeout", "must be longer than zero")
        where.done()
        if "argv" not in raw:
            return base
    else:
        h.problem(
            name, f"expected an argv list or {{ argv = [...], timeout = ... }}, got {describe(raw)}"
        )
        return base
    if not argv or not argv[0].strip():
        where.problem(key, "must not be empty (its first element is the program)")
        return base
    return Hook(argv=argv, timeout=float(timeout or DEFAULT_HOOK_TIMEOUT))
