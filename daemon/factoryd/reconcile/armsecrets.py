"""Arms whose `env:` secrets are missing: unavailable, with a reason, before any run.

A secret that names a variable the daemon's environment lacks would make
every run on the arm fail to start, each failure burning its task's
restart budget. Instead the arm is kept out of routing from the moment the
config is applied (start-up and every reload): the router rejects it as
`secret_missing`, `status` shows it, the availability metric says 0, and a
task with no other arm is blocked, not failed. `factoryd check` warns of
the same, read against its own environment. Values are never read here,
let alone logged: only whether the variable is set.
"""

from __future__ import annotations

from collections.abc import Mapping

from structlog.typing import FilteringBoundLogger

from factoryd.config.model import Config
from factoryd.routing.engine import RoutingEngine


def missing_secrets(config: Config, environ: Mapping[str, str]) -> dict[str, str]:
    """Per arm, what is missing (one line, no value), for arms that miss any."""
    missing: dict[str, str] = {}
    for arm in config.arms:
        launch = config.launch.get(arm.name)
        if launch is None:
            continue
        absent = [
            f"{var} (env:{ref})"
            for var, source in launch.secrets
            for kind, _, ref in [source.partition(":")]
            if kind == "env" and ref not in environ
        ]
        if absent:
            missing[arm.name] = "secret variable not set: " + ", ".join(absent)
    return missing


def mark_missing_secrets(
    engine: RoutingEngine, config: Config, environ: Mapping[str, str], log: FilteringBoundLogger
) -> None:
    """Keep arms with missing secrets out of routing; let the others back in."""
    missing = missing_secrets(config, environ)
    for name in engine.arms:
        detail = missing.get(name, "")
        tel = engine.telemetry.arms.get(name)
        if tel is None and not detail:
            continue
        tel = engine.telemetry.arm(name)
        if tel.missing_secret == detail:
            continue
        tel.missing_secret = detail
        engine.telemetry.versions.bump(name)
        if detail:
            log.warning("arm.unavailable", arm=name, reason="secret_missing", detail=detail)
        else:
            log.info("arm.available", arm=name, note="its secrets are set now")
    engine.router.forget()
