"""The fleet layer's exceptions: few, so the daemon can act on each kind.

`FleetUnavailable` is the one the daemon meets in normal life: the database
cannot be reached or did not answer, and the operation did not happen (or,
for a commit whose answer was lost, may have; every write is idempotent or
expires so either way is safe). The daemon keeps its runs going, queues
settlements locally and starts no shared work until the database is back.
The other two are operator mistakes and never transient.
"""

from __future__ import annotations


class FleetError(Exception):
    """Base of every fleet error; the message is one line, without secrets."""


class FleetUnavailable(FleetError):
    """The database is unreachable or failed the operation; retry later."""


class FleetConfigError(FleetError):
    """The `[fleet]` settings are wrong (the message names the key)."""


class FleetSchemaError(FleetError):
    """The database's fleet schema is newer than this factoryd understands."""
