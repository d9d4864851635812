"""The daemon's logging set up without the imports it never uses.

structlog imports `rich` as soon as it can find it (a development tool,
import-linter, installs it beside the daemon), for pretty tracebacks the
daemon never renders that way: its logs format exceptions themselves
(observe/logs.py). That import alone cost a running daemon about 5 MiB of
resident memory for its whole life. Importing this module loads structlog
as if rich were absent, then forgets that, so rich stays importable for
anyone else in the process. It is imported by `factoryd run` before the
daemon's modules, which load structlog.
"""

from __future__ import annotations

import sys


def _load_structlog_without_rich() -> None:
    if "structlog" in sys.modules or "rich" in sys.modules:
        return  # too late (or rich is in use): change nothing
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


_load_structlog_without_rich()

from factoryd.observe import logs  # noqa: E402  (after structlog is loaded as above)


def configure_logs(fmt: str, level: str) -> None:
    """`logs.configure` for the daemon process (see the module docstring)."""
    logs.configure(fmt, level)
