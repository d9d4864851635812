"""The spool directory: submissions from tools that cannot use the socket.

A tool writes a TOML request under a temporary name and renames it into
place; the daemon takes each `*.toml` file, journals it through the same
path as a socket submission, then removes it (the removal is the
acknowledgement). A file that cannot be taken moves to `rejected/` with the
reason beside it: never deleted.

Anyone who can write the spool can put anything there, so nothing in it is
trusted: only regular files are read, checked with lstat and again with
fstat on a descriptor opened non-blocking and without following links (a
FIFO, device, socket or symlink, to anything, is never opened for reading,
so the loop never blocks on one); a size cap is checked before reading; a
name that is not valid UTF-8 is quarantined under a safe name. Nothing in
the spool can crash the watcher or keep it from the valid files beside it.
A submission the journal cannot take (a full disk) is not a bad file: it
stays in place and is taken once the journal can write again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from factoryd.config.submission import SubmitError
from factoryd.service.submit import NotJournaled, submit

if TYPE_CHECKING:
    from factoryd.reconcile.reconciler import Reconciler

#: A request is a few keys; anything larger is not one.
MAX_SPOOL_FILE = 1024 * 1024


class Unreadable(SubmitError):
    """The spool entry is not a file we will read (its kind, size or name)."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symlink"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_spool_bytes(path: Path, limit: int = MAX_SPOOL_FILE) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, never blocking."""
    st = path.lstat()
    if not stat.S_ISREG(st.st_mode):
        raise Unreadable(f"{_kind(st.st_mode)}: spool entries must be regular files")
    if st.st_size > limit:
        raise Unreadable(f"{st.st_size} bytes: spool files are at most {limit} bytes")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY
    fd = os.open(path, flags)  # swapped for a link meanwhile: ELOOP (an OSError)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # swapped for a FIFO between lstat and open
            raise Unreadable(f"{_kind(st.st_mode)}: spool entries must be regular files")
        if st.st_size > limit:
            raise Unreadable(f"{st.st_size} bytes: spool files are at most {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 65536):
            size += len(chunk)
            if size > limit:  # grew while we read
                raise Unreadable(f"over {limit} bytes: spool files are at most {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_spool_file(path: Path) -> dict[str, Any]:
    """A spool file is TOML: request keys (template/set/spec/idempotency_key)."""
    raw = read_spool_bytes(path)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise SubmitError(f"{path.name}: invalid UTF-8 at byte {exc.start}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SubmitError(f"{path.name}: invalid TOML: {exc}") from None
    except RecursionError:
        raise SubmitError(f"{path.name}: nested too deeply") from None
    data.setdefault("idempotency_key", f"spool:{path.name}")
    return data


def safe_name(raw: bytes) -> str:
    """A printable, unique stand-in for a file name that is not valid UTF-8."""
    shown = raw.decode("utf-8", "replace").replace("\ufffd", "_").replace("/", "_")
    digest = hashlib.sha256(raw).hexdigest()[:12]
    return f"badname-{digest}-{shown[:64]}"


async def watch_spool(rec: Reconciler, spool: Path, interval: float = 2.0) -> None:
    """Poll the spool directory; accepted files are removed (the journal has them),
    bad ones move to `rejected/` with a `.error` file beside them."""
    watcher = _Watcher(rec, spool)
    while True:
        try:
            await watcher.scan()
        except Exception as exc:  # never the daemon's end: said, then tried again
            watcher.say("spool.scan_failed", spool=str(spool), error=str(exc))
        await anyio.sleep(interval)


class _Watcher:
    def __init__(self, rec: Reconciler, spool: Path) -> None:
        self.rec = rec
        self.spool = spool
        self.rejected = spool / "rejected"
        #: The last problem said about each entry: said once, not every scan.
        self._said: dict[str, str] = {}

    def say(self, event: str, **fields: Any) -> None:
        """Log a problem once per entry (until it changes), not once per scan."""
        key, problem = event + str(fields.get("file", "")), str(fields.get("error", ""))
        if self._said.get(key) != problem:
            self._said[key] = problem
            self.rec.logger.error(event, **fields)

    async def scan(self) -> None:
        self.spool.mkdir(parents=True, exist_ok=True)
        self.rejected.mkdir(exist_ok=True)
        names = sorted(os.listdir(os.fsencode(self.spool)))  # noqa: PTH208 - bytes: any name
        for raw in names:
            if raw.startswith(b".") or not raw.endswith(b".toml"):
                continue
            path = self.spool / os.fsdecode(raw)
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                self._quarantine(path, safe_name(raw), "the file name is not valid UTF-8")
                continue
            try:
                await self._take(path, name)
            except Exception as exc:  # one bad entry never stops the others
                self._quarantine(path, name, f"could not be taken: {type(exc).__name__}: {exc}")

    async def _take(self, path: Path, name: str) -> None:
        rec = self.rec
        try:
            request = read_spool_file(path)
            accepted = await submit(rec, request, "spool", name)
        except FileNotFoundError:
            return  # taken away meanwhile
        except NotJournaled as exc:
            # Not the file's fault: it stays, unacknowledged, and is retried.
            self.say("spool.not_journaled", file=name, error=str(exc))
            return
        except (SubmitError, OSError) as exc:
            self._quarantine(path, name, str(exc))
            return
        self._said.pop("spool.not_journaled" + name, None)
        rec.logger.info("spool.accepted", file=name, id=accepted.id, duplicate=accepted.duplicate)
        try:
            path.unlink()
        except OSError as exc:
            self.say("spool.remove_failed", file=name, error=str(exc))

    def _quarantine(self, path: Path, name: str, reason: str) -> None:
        rec = self.rec
        target = self.rejected / name
        try:
            path.replace(target)  # rename: never opens the entry, whatever it is
        except OSError as exc:
            self.say("spool.quarantine_failed", file=name, error=str(exc))
            return
        rec.metrics.submissions.labels("spool", "rejected").inc()
        rec.logger.warning("spool.rejected", file=name, error=reason)
        _write_reason(self.rejected / (name + ".error"), reason)


def _write_reason(path: Path, reason: str) -> None:
    """The `.error` file, never through a link someone left in its place."""
    with contextlib.suppress(OSError):
        path.unlink()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError:
        return
    with contextlib.suppress(OSError), os.fdopen(fd, "w") as f:
        f.write(reason + "\n")
