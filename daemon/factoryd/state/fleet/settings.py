"""The `[fleet]` settings, as the fleet storage sees them.

The table is parsed in the config layer (config/fleet.py), so that a bad
`[fleet]` is reported like any other config problem and `factoryd check`
can show it; this module keeps the fleet layer's own entry point, which
raises `FleetConfigError` for callers outside a config load.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from factoryd.config.fleet import KEYS, FleetSettings, FleetSettingsError
from factoryd.config.fleet import parse_fleet as _parse
from factoryd.state.fleet.errors import FleetConfigError

__all__ = ["KEYS", "FleetSettings", "parse_fleet"]


def parse_fleet(
    table: Mapping[str, Any] | None, *, default_host: str | None = None
) -> FleetSettings | None:
    """Settings from the `[fleet]` table, or None when there is no such table."""
    try:
        return _parse(table, default_host=default_host)
    except FleetSettingsError as exc:
        raise FleetConfigError(str(exc)) from None
