"""A submission request checked against the config in force: the task it asks for.

Validation lives with the config because a request is a task table like any
other: the same reader, the same key paths in errors. Recovery calls it too,
to re-check journaled submissions against today's config.
"""

from __future__ import annotations

from typing import Any

from factoryd.config.loader import parse_task_override
from factoryd.config.model import Config
from factoryd.config.tomltable import ConfigError
from factoryd.core.taskspec import TaskSpec

REQUEST_KEYS = {"template", "set", "spec", "idempotency_key", "name"}


class SubmitError(Exception):
    """A request that cannot be accepted; the message names what is wrong."""


def build_spec(
    config: Config, request: dict[str, Any], sub_id: str, where: str
) -> tuple[TaskSpec, str]:
    """Validate a request against `config`; return the task spec and its metric label."""
    unknown = set(request) - REQUEST_KEYS
    if unknown:
        raise SubmitError(f"{where}: unknown request key(s): {', '.join(sorted(unknown))}")
    template = request.get("template")
    if template is not None and not isinstance(template, str):
        raise SubmitError(f"{where}: template: expected a string")
    if "spec" in request:
        if template is not None or "set" in request:
            raise SubmitError(f"{where}: give either spec, or template with set")
        data = request["spec"]
    else:
        if template is None:
            raise SubmitError(f"{where}: give a template (with optional set) or a full spec")
        data = request.get("set", {})
    if not isinstance(data, dict):
        raise SubmitError(f"{where}: expected a table of task keys")
    data = dict(data)
    data.pop("name", None)
    if template is None:
        data.setdefault("kind", "oneshot")
    data["name"] = sub_id
    try:
        spec = parse_task_override(config, data, template=template, where=where)
    except ConfigError as exc:
        raise SubmitError("; ".join(f"{p.key}: {p.message}" for p in exc.problems)) from None
    return spec, template or "adhoc"
