"""The `[web]` table: where the status page is served and who may act on it.

The page shares `metrics_listen` unless `listen` moves it elsewhere, is
read-only unless `actions = true`, and beyond loopback is locked behind a
bearer token read from `token_file`. A page that could change state while
reachable from other hosts without a token is a config error, so the daemon
refuses to start rather than open it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from factoryd.config.tomltable import Table


@dataclass(frozen=True, slots=True)
class WebSettings:
    #: Serve the page at all (False leaves only /metrics and /healthz).
    enabled: bool = True
    #: HOST:PORT of its own, or None to share `metrics_listen`.
    listen: str | None = None
    #: Offer and accept POST actions (cancel, reset, ...).
    actions: bool = False
    #: A file whose first line is the bearer token; required beyond loopback.
    token_file: Path | None = None


def is_loopback(listen: str) -> bool:
    """True when HOST:PORT binds only to this machine."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def valid_listen(listen: str) -> bool:
    host, sep, port = listen.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 <= int(port) <= 65535)


def parse_web(t: Table, path_of: Callable[[str], Path], metrics_listen: str) -> WebSettings:
    """Read `[web]` (records problems on `t`, never raises); call `t.done()` after."""
    listen = t.string("listen", None)
    if isinstance(listen, str) and not valid_listen(listen):
        t.problem("listen", f"expected HOST:PORT, got {listen!r}")
        listen = None
    token = t.string("token_file", None)
    token_file = path_of(token) if isinstance(token, str) else None
    settings = WebSettings(
        enabled=t.boolean("enabled", True),
        listen=listen if isinstance(listen, str) else None,
        actions=t.boolean("actions", False),
        token_file=token_file,
    )
    where = settings.listen or metrics_listen
    if token_file is not None:
        try:
            if not token_file.read_text(encoding="utf-8").strip():
                t.problem("token_file", f"{token_file} is empty")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            t.problem("token_file", f"cannot read {token_file}: {reason}")
    if (
        settings.enabled
        and settings.actions
        and where != "off"
        and not is_loopback(where)
        and token_file is None
    ):
        t.problem(
            "actions",
            f"the page on {where} is reachable beyond loopback: actions need token_file",
        )
    t.done()
    return settings
