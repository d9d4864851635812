"""TOML config -> one immutable, validated `Config`.

Validation collects every problem instead of stopping at the first, and
each problem names the file, the key path (``arms[2].pools[0]``) and what
was expected. Unknown keys are errors, with a suggestion when a known key
is close: a typo must never be silently ignored. Relative paths are taken
relative to the config file, so a config works from any current directory.

This module reads the file and puts the sections together in the order
they depend on each other; each section has its own reader (settings.py,
arms.py, tasks.py) and the result's shape is model.py's.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from factoryd.config.arms import read_arm, read_pool
from factoryd.config.context import LoadContext, declared
from factoryd.config.files import MAX_CONFIG_BYTES, read_regular_file
from factoryd.config.fleet import FleetSettingsError, parse_fleet
from factoryd.config.model import Config
from factoryd.config.settings import read_daemon, read_routing
from factoryd.config.tasks import read_task
from factoryd.config.tomltable import ConfigError, Problem, Table
from factoryd.config.web import parse_web
from factoryd.core.taskspec import TaskSpec


def _load(ctx: LoadContext, data: dict[str, Any]) -> Config | None:
    root = Table(ctx, data, "")
    daemon = read_daemon(ctx, root.sub("daemon"))
    routing, scarcity, quality, health, telemetry_window = read_routing(ctx, root.sub("routing"))
    pool_tables = ctx.items(root, "pools")
    arm_tables = ctx.items(root, "arms")
    ctx.declared_pools = declared(pool_tables)
    ctx.declared_arms = declared(arm_tables)
    parsed_pools = [read_pool(ctx, t) for t in pool_tables]
    ctx.unique(pool_tables, [t.data.get("name") for t in pool_tables], "pool")
    pools = {p.name: p for p, _ in parsed_pools if p is not None}
    pool_caps = {p.name: cap for p, cap in parsed_pools if p is not None and cap is not None}
    parsed_arms = [(t, *read_arm(ctx, t, pools)) for t in arm_tables]
    ctx.unique(arm_tables, [t.data.get("name") for t in arm_tables], "arm")
    arms = {a.name: a for _, a, _ in parsed_arms if a is not None}
    launch = {a.name: ln for _, a, ln in parsed_arms if a is not None}
    for t, arm, ln in parsed_arms:
        if arm is not None and arm.cli != "command" and ln.argv is not None:
            t.problem("argv", f"only command arms take argv; a {arm.cli} arm builds its own")
    template_tables = ctx.items(root, "templates")
    templates: dict[str, TaskSpec] = {}
    for t in template_tables:
        spec = read_task(ctx, t, arms, launch, template=True)
        if spec is not None:
            templates[spec.name] = spec
    ctx.unique(template_tables, [t.data.get("name") for t in template_tables], "template")
    task_tables = ctx.items(root, "tasks")
    tasks = [read_task(ctx, t, arms, launch) for t in task_tables]
    ctx.unique(task_tables, [t.data.get("name") for t in task_tables], "task")
    fleet = None
    try:
        fleet = parse_fleet(root.raw("fleet") if "fleet" in data else None)
    except FleetSettingsError as exc:
        ctx.problem(exc.key, exc.message)
    for t, spec in zip(task_tables, tasks, strict=True):
        if fleet is None and spec is not None and spec.fleet is not None:
            t.problem("fleet", '"once" needs a [fleet] table (the database the hosts share)')
    web = parse_web(root.sub("web"), ctx.path_of, daemon.metrics_listen)
    root.done()
    if ctx.problems:
        return None
    return Config(
        path=ctx.path,
        daemon=daemon,
        routing=routing,
        scarcity=scarcity,
        quality=quality,
        health=health,
        telemetry_window=telemetry_window,
        pools=tuple(pools.values()),
        pool_caps=pool_caps,
        arms=tuple(arms.values()),
        launch=launch,
        tasks=tuple(t for t in tasks if t is not None),
        templates=templates,
        fleet=fleet,
        web=web,
    )


def parse_config(text: bytes | str, path: Path) -> Config:
    """Validate config text; raise ConfigError listing every problem."""
    loader = LoadContext(path)
    if isinstance(text, bytes):
        raw = text
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise ConfigError(
                [Problem(str(path), f"(line {line})", f"invalid UTF-8 at byte {exc.start}")]
            ) from None
    data = parse_toml(text, str(path))
    config = _load(loader, data)
    if config is None:
        raise ConfigError(loader.problems)
    return config


def parse_toml(text: str, where: str) -> dict[str, Any]:
    """TOML text to data; a syntax error, or nesting too deep for the parser's
    recursion (100,000 `[`), becomes one problem naming `where`."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([Problem(where, "(syntax)", f"invalid TOML: {exc}")]) from None
    except RecursionError:
        raise ConfigError(
            [Problem(where, "(syntax)", "arrays or inline tables are nested too deeply")]
        ) from None


def load_config(path: str | Path) -> Config:
    """Read and validate a config file; raise ConfigError naming file and key."""
    p = Path(path).expanduser()
    try:
        p = p.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise ConfigError([Problem(str(p), "(file)", f"cannot resolve: {exc}")]) from None
    return parse_config(read_regular_file(p, MAX_CONFIG_BYTES), p)


def parse_task_override(
    config: Config,
    data: dict[str, Any],
    *,
    template: str | None,
    where: str,
    route_only: bool = False,
) -> TaskSpec:
    """A submitted task: a template plus overrides, or a full spec. Raises ConfigError."""
    loader = LoadContext(Path(where))
    arms = {a.name: a for a in config.arms}
    base = None
    if template is not None:
        base = config.templates.get(template)
        if base is None:
            known = ", ".join(config.templates) or "none are defined"
            raise ConfigError(
                [Problem(where, "template", f"no template named {template!r} (known: {known})")]
            )
    spec = read_task(
        loader, Table(loader, data, ""), arms, config.launch, base, template=route_only
    )
    if spec is not None and spec.fleet is not None:
        loader.problem("fleet", "only a configured task may be fleet-wide")
    if loader.problems or spec is None:
        raise ConfigError(loader.problems)
    return spec


__all__ = ["load_config", "parse_config", "parse_task_override"]
