"""Structured logging: JSON lines for journald and files, readable console on a TTY.

Secrets never reach a log line: a processor replaces the value of any key
that looks like a credential (*KEY*, *TOKEN*, *SECRET*, *PASSWORD*) and
scrubs registered secret values (an arm's credential variables) from every
string, including nested dicts and lists.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import sys
import time
from collections.abc import Iterable, MutableMapping
from json import encoder as json_encoder
from typing import Any, TextIO

import structlog

from factoryd.observe.linewriter import LineWriter, LineWriterFactory

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
        #: What `scrub_line` looks for: each secret, and its JSON-escaped form.
        self._needles: tuple[str, ...] = ()

    def add(self, values: Iterable[str]) -> None:
        # Very short values would scrub ordinary words; real keys are long.
        self._values.update(v for v in values if len(v) >= 6)
        needles = self._values | {json.dumps(v)[1:-1] for v in self._values}
        self._needles = tuple(sorted(needles, key=len, reverse=True))

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
        for key, value in event.items():
            event[key] = self.scrub(value, key)
        return event

    # -- JSON lines: names per field, values once per line ---------------------

    def scrub_names(self, event: MutableMapping[str, Any]) -> None:
        """The half of `__call__` that goes by field name: credential-named fields,
        at the top and nested. Secret values are `scrub_line`'s. The daemon writes
        a few lines per run, and this looks at a line's names with set
        operations, and at its values once, for containers."""
        keys = event.keys()
        if not _NAMED.issuperset(keys):
            for key in keys - _NAMED:
                _name_key(key)
        if not keys.isdisjoint(_SECRET_NAMES):
            for key in keys & _SECRET_NAMES:
                event[key] = self._by_name(event[key], key)
        # A line of plain values only (most are) has nothing nested to walk: asked
        # in C, without a Python step per field.
        if _LEAVES.issuperset(map(type, event.values())):
            return
        # A list of plain values has no field names in it (and renders the same
        # as `_by_name`'s copy of it): only dicts and lists holding containers
        # are walked.
        nested = [k for k, v in event.items() if v.__class__ in _NESTED]
        for key in nested:
            value = event[key]
            if value.__class__ is dict or not _LEAVES.issuperset(map(type, value)):
                event[key] = self._by_name(value, key)

    def _by_name(self, value: Any, key: str = "") -> Any:
        if key and _secret_key(key) and isinstance(value, str | bytes | int | float):
            return REDACTED
        if isinstance(value, dict):
            return {k: self._by_name(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            if _LEAVES.issuperset(map(type, value)):
                return list(value)
            return [self._by_name(v) for v in value]
        return value

    def scrub_line(self, line: str) -> str:
        """Secret values out of a rendered JSON line, as they appear in it (raw, and
        JSON-escaped where that differs): one search per secret per line instead
        of one per secret per string field."""
        for needle in self._needles:
            if needle in line:
                line = line.replace(needle, REDACTED)
        return line


#: Field names seen, and those among them that look like credentials (bounded:
#: a flood of new names starts the sets again).
_NAMED: set[str] = set()
_SECRET_NAMES: set[str] = set()
_NESTED = frozenset({dict, list, tuple})
_LEAVES = frozenset({str, int, float, bool, type(None)})


def _name_key(key: str) -> None:
    if len(_NAMED) > 4096:
        _NAMED.clear()
        _SECRET_NAMES.clear()
    _NAMED.add(key)
    if key and _secret_key(key):
        _SECRET_NAMES.add(key)


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
        event["timestamp"] = self.text()
        return event

    def text(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        micro = int((now - second) * 1e6)
        return f"{self._prefix}.{micro:06d}Z" if micro else f"{self._prefix}Z"


class _JSONLines(structlog.processors.JSONRenderer):
    """structlog's JSON rendering, byte for byte, with json's C encoder made once
    instead of once per line (json.dumps builds a new one for every call that
    passes `default`). Whatever it cannot encode goes the usual way, which
    raises the usual errors."""

    def __init__(self) -> None:
        super().__init__(sort_keys=False)
        make = getattr(json_encoder, "c_make_encoder", None)
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

    def inner(self, fields: MutableMapping[str, Any]) -> str | None:
        """`fields` rendered without the braces ("" for none); None: not by the
        C encoder (the caller takes the usual way)."""
        if self._encode is None:
            return None
        try:
            return "".join(self._encode(fields, 0))[1:-1]
        except Exception:
            return None

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
#: The level methods a JSON-lines logger renders itself.
_METHOD_LEVELS = {**_LEVELS, "critical": logging.CRITICAL}


class _JSONPipeline:
    """The JSON lines' processors in one call: level, timestamp, redaction,
    exception text, rendering, in that order (as the separate processors ran;
    the daemon writes a few lines per run, and each processor is a call).
    Secret values are scrubbed from the rendered line (the exception text
    included), credential-named fields before rendering."""

    def __init__(self) -> None:
        self._stamp = _Clock()
        self._render = _JSONLines()
        self._exc = structlog.processors.format_exc_info

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        event["level"] = _LEVEL_OF_METHOD.get(method, method)
        self._stamp(logger, method, event)
        REDACTOR.scrub_names(event)
        if "exc_info" in event:
            event = self._exc(logger, method, event)
        return REDACTOR.scrub_line(self._render(logger, method, event))

    def line(self, bound: Any, method: str, event: Any, kw: dict[str, Any]) -> str | None:
        """What `__call__` renders for `bound._context` + `kw` + `event`, byte for
        byte, without building the merged dict: the bound context (a run's task,
        id, arm, pools) is rendered once per bound logger and spliced into each
        of its lines, `event`, `level` and `timestamp` are appended as text.
        None where that would not be the same line (a field given twice, an
        exception, a value the C encoder refuses): the caller takes the usual way.
        Context values are taken as immutable once bound (as structlog asks)."""
        if event.__class__ is not str or not kw.keys().isdisjoint(_OWN_FIELDS):
            return None
        context = bound._context
        head = ""
        if context:
            cached = bound.__dict__.get("_json_head")
            if cached is None or cached[0] != len(context):
                fields = dict(context)
                ok = _OWN_FIELDS.isdisjoint(fields)
                if ok:
                    REDACTOR.scrub_names(fields)
                cached = (len(context), self._render.inner(fields) if ok else None)
                bound._json_head = cached
            head = cached[1]
            if head is None or not kw.keys().isdisjoint(context):
                return None
        if kw:
            REDACTOR.scrub_names(kw)
            body = self._render.inner(kw)
            if body is None:
                return None
            head = f"{head}, {body}" if head else body
        return REDACTOR.scrub_line(
            f'{{{head}{", " if head else ""}"event": {_json_text(event)}, '
            f'"level": "{_LEVEL_OF_METHOD.get(method, method)}", '
            f'"timestamp": "{self._stamp.text()}"}}'
        )


#: Fields a line's own processors write (and the exception, which they format).
_OWN_FIELDS = frozenset({"event", "level", "timestamp", "exc_info"})
_json_text = json_encoder.encode_basestring_ascii


def _json_logger_class(min_level: int) -> type[Any]:
    """structlog's filtering bound logger, whose level methods hand a line without
    positional arguments straight to `_JSONPipeline.line` when that is the
    configured chain (a test's `capture_logs` or another chain: the usual way).
    A run writes a few lines; each saved the merged dict, the processor loop and
    two repackings of its fields."""
    base: type[Any] = structlog.make_filtering_bound_logger(min_level)
    methods: dict[str, Any] = {}
    for name, level in _METHOD_LEVELS.items():
        if level >= min_level:
            methods[name] = _fast_method(name, getattr(base, name))
    for alias, name in (("warn", "warning"), ("msg", "info"), ("fatal", "critical")):
        if name in methods:
            methods[alias] = methods[name]
    return type(f"JSONLines{base.__name__}", (base,), methods)


def _fast_method(name: str, usual: Any) -> Any:
    def meth(self: Any, event: Any = None, *args: Any, **kw: Any) -> Any:
        procs = self._processors
        if not args and len(procs) == 1 and procs[0].__class__ is _JSONPipeline:
            line = procs[0].line(self, name, event, kw)
            if line is not None:
                return getattr(self._logger, name)(line)
        return usual(self, event, *args, **kw)

    meth.__name__ = name
    return meth


#: structlog's add_log_level: the method's name, but for these two.
_LEVEL_OF_METHOD = {"warn": "warning", "exception": "error"}


def configure(fmt: str = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog once for the process. `fmt`: auto | json | console.

    No processor merges structlog's context variables: nothing in the daemon
    binds any, and merging them walked every context variable on every line."""
    out = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    processors: list[Any] = (
        [
            structlog.processors.add_log_level,
            _Clock(),
            REDACTOR,
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=out.isatty()),
        ]
        if fmt == "console"
        else [_JSONPipeline()]
    )
    min_level = _LEVELS.get(level, logging.INFO)
    factory = LineWriterFactory(out)
    structlog.configure(
        processors=processors,
        wrapper_class=(
            structlog.make_filtering_bound_logger(min_level)
            if fmt == "console"
            else _json_logger_class(min_level)
        ),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    _IN_USE[:] = [factory.writer]


#: The writer of the configuration in force.
_IN_USE: list[LineWriter] = []


def lines_per_turn() -> contextlib.AbstractContextManager[None]:
    """While in force, lines logged on the running loop's thread are written
    once per turn of the loop (linewriter.py); nothing to do if logs are not
    configured."""
    return _IN_USE[0].per_turn() if _IN_USE else contextlib.nullcontext()


def lines_dropped() -> int:
    """Lines the writer in use could not write (factoryd_log_lines_dropped_total)."""
    return _IN_USE[0].dropped if _IN_USE else 0


def get_logger(**bind: Any) -> Any:
    return structlog.get_logger("factoryd").bind(**bind)
