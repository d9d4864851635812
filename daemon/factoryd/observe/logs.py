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
import time
from collections.abc import Iterable, MutableMapping
from json import encoder as json_encoder
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
        # The daemon writes several lines per run: the common fields (numbers,
        # booleans, None, strings when no secret is registered, names that are
        # not credential-like) are passed over without a call per field.
        values = self._values
        for key, value in event.items():
            if value is None:
                continue
            cls = value.__class__
            secret = _SECRET_KEYS.get(key)
            if secret is None:
                secret = _remember_key(key)
            if secret:
                event[key] = self.scrub(value, key)
            elif cls is str:
                if values:
                    event[key] = self.scrub(value)
            elif cls not in _PLAIN:
                event[key] = self.scrub(value, key)
        return event


#: `_secret_key` answers by name, as a plain dict (read once per field of every line).
_SECRET_KEYS: dict[str, bool] = {}


def _remember_key(key: str) -> bool:
    if len(_SECRET_KEYS) > 4096:  # field names are few; a flood of new ones is not kept
        _SECRET_KEYS.clear()
    secret = _SECRET_KEYS[key] = bool(key) and _secret_key(key)
    return secret


REDACTOR = Redactor()


class _Clock:
    """The `timestamp` field, as structlog's TimeStamper(fmt="iso", utc=True) writes
    it (2026-12-02T08:33:55.771277Z), with the date and time of day formatted
    once per second instead of once per line."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(
        self, _logger: Any, _method: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        micro = int((now - second) * 1e6)
        event["timestamp"] = f"{self._prefix}.{micro:06d}Z" if micro else f"{self._prefix}Z"
        return event


class _JSONLines(structlog.processors.JSONRenderer):
    """structlog's JSON rendering, byte for byte, with json's C encoder made once
    instead of once per line (json.dumps builds a new one for every call that
    passes `default`). Whatever it cannot encode goes the usual way, which
    raises the usual errors."""

    def __init__(self) -> None:
        super().__init__(sort_keys=False)
        make = json_encoder.c_make_encoder
        self._encode = (
            None
            if make is None
            else make(
                None,  # no circular check: a circular value fails and takes the usual way
                self._dumps_kw["default"],
                json_encoder.encode_basestring_ascii,
                None,
                ": ",
                ", ",
                False,
                False,
                True,
            )
        )

    def __call__(self, logger: Any, name: str, event_dict: MutableMapping[str, Any]) -> Any:
        if self._encode is not None:
            try:
                return "".join(self._encode(event_dict, 0))
            except Exception:  # noqa: S110 - rendered (or refused) below, as before
                pass
        return super().__call__(logger, name, event_dict)


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
        structlog.dev.ConsoleRenderer(colors=out.isatty()) if fmt == "console" else _JSONLines()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _Clock(),
            REDACTOR,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=False,
    )


def get_logger(**bind: Any) -> Any:
    return structlog.get_logger("factoryd").bind(**bind)
