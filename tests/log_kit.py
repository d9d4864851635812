"""structlog's stock processor chain, the reference the daemon's fused JSON
lines are compared with byte for byte (observe/logs.py renders the same lines
in one call, and a bound logger's context once)."""

from __future__ import annotations

import io
import re

import structlog
from factoryd.observe import logs

#: A line's timestamp, which two renderings made moments apart do not share.
STAMP = re.compile(r'"timestamp": "[^"]*"')


def configure_stock_chain(out: io.StringIO) -> None:
    """Log through the separate processors logs.py fuses, into `out`, at info."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            logs.REDACTOR,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(sort_keys=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(20),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
