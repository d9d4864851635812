"""Structured logging: JSON lines for journald and files, readable console on a TTY.

Secrets never reach a log line: a processor replaces the value of any key
that looks like a credential (*KEY*, *TOKEN*, *SECRET*, *PASSWORD*) and
scrubs registered secret values (an arm's credential variables) from every
string, including nested dicts and lists.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.I)


_PLAIN = frozenset({int, float, bool, type(None)})


@functools.lru_cache(maxsize=4096)
def _secret_key(key: str) -> bool:
    """Whether a field name looks like a credential (log lines reuse a few
    dozen names, so the answer is remembered, not searched for every line)."""
    return key not in _NOT_SECRET and _SECRET_KEY.search(key) is not None


#: Field names that match the pattern but are counts or labels, never credentials
#: (an idempotency key names a request; it is logged so that retries can be traced).
_NOT_SECRET = frozenset(
    {"idempotency_key", "tokens", "input_tokens", "output_tokens", "reasoning_tokens"}
)


class Redactor:
    """Knows the secret values in use; scrubs them (and credential-named keys)."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, values: Iterable[str]) -> None:
        # Very short values would scrub ordinary words; real keys are long.
        self._values.update(v for v in values if len(v) >= 6)

    def scrub(self, value: Any, key: str = "") -> Any:
        if key and _secret_key(key) and isinstance(value, str | bytes | int | float):
            return REDACTED
        cls = value.__class__
        if cls is str:
            for secret in self._values:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if cls in _PLAIN:  # numbers, booleans, None: nothing to scrub
            return value
        if isinstance(value, dict):
            return {k: self.scrub(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        return value

    def __call__(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event):
            event[key] = self.scrub(event[key], key)
        return event


REDACTOR = Redactor()

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog once for the process. `fmt`: auto | json | console."""
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if fmt == "console"
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            REDACTOR,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger(**bind: Any) -> Any:
    return structlog.get_logger("factoryd").bind(**bind)
