"""The spool directory: submissions from tools that cannot use the socket.

A tool writes a TOML request under a temporary name and renames it into
place; the daemon takes each `*.toml` file, journals it through the same
path as a socket submission, then removes it. A file that cannot be taken
moves to `rejected/` with the reason beside it: never deleted.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from factoryd.config.submission import SubmitError
from factoryd.service.submit import submit

if TYPE_CHECKING:
    from factoryd.reconcile.reconciler import Reconciler


def read_spool_file(path: Path) -> dict[str, Any]:
    """A spool file is TOML: request keys (template/set/spec/idempotency_key)."""
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SubmitError(f"{path.name}: invalid UTF-8 at byte {exc.start}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SubmitError(f"{path.name}: invalid TOML: {exc}") from None
    data.setdefault("idempotency_key", f"spool:{path.name}")
    return data


async def watch_spool(rec: Reconciler, spool: Path, interval: float = 2.0) -> None:
    """Poll the spool directory; accepted files are removed (the journal has them),
    bad ones move to `rejected/` with a `.error` file beside them."""
    spool.mkdir(parents=True, exist_ok=True)
    rejected = spool / "rejected"
    rejected.mkdir(exist_ok=True)
    while True:
        for path in sorted(spool.glob("*.toml")):
            if path.name.startswith("."):
                continue
            await _take(rec, path, rejected)
        await anyio.sleep(interval)


async def _take(rec: Reconciler, path: Path, rejected: Path) -> None:
    try:
        request = read_spool_file(path)
        accepted = await submit(rec, request, "spool", path.name)
    except (SubmitError, OSError) as exc:
        rec.metrics.submissions.labels("spool", "rejected").inc()
        rec.logger.warning("spool.rejected", file=path.name, error=str(exc))
        target = rejected / path.name
        try:
            path.replace(target)
            target.with_name(target.name + ".error").write_text(str(exc) + "\n")
        except OSError as move_exc:
            rec.logger.error("spool.quarantine_failed", file=path.name, error=str(move_exc))
        return
    rec.logger.info("spool.accepted", file=path.name, id=accepted.id, duplicate=accepted.duplicate)
    try:
        path.unlink()
    except OSError as exc:
        rec.logger.error("spool.remove_failed", file=path.name, error=str(exc))
