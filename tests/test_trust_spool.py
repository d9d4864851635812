"""Hostile spool entries on a live daemon: nothing blocks the loop, nothing crashes
it, each bad entry is quarantined with its reason, and the valid file beside
them is taken."""

from __future__ import annotations

import os
import signal
import socket
import stat
import time
from pathlib import Path

import pytest
from daemon_kit import header, start_daemon, task, write_config
from factoryd.service.control import call
from factoryd.service.spool import MAX_SPOOL_FILE, Unreadable, read_spool_bytes
from proc_kit import wait_for

VALID = 'template = "t"\n'
BAD_NAME = b"caf\xe9-\xff.toml"


def _plant(spool: Path, keep: list[socket.socket]) -> dict[str, str]:
    """Every kind of hostile entry, by the name it is quarantined under (or
    the name's prefix, for the one that is not UTF-8): what its reason names."""
    os.mkfifo(spool / "fifo.toml")
    os.mkfifo(spool / "hidden-fifo")
    (spool / "link-to-fifo.toml").symlink_to(spool / "hidden-fifo")
    (spool / "link-to-zero.toml").symlink_to("/dev/zero")
    (spool / "link-to-shadow.toml").symlink_to("/etc/shadow")
    (spool / "dangling.toml").symlink_to(spool / "nowhere")
    os.mknod(spool / "zero.toml", 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    with (spool / "sparse.toml").open("wb") as f:
        f.truncate(1 << 30)  # 1 GiB of nothing: refused before a byte is read
    (spool / "dir.toml").mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(spool / "sock.toml"))
    keep.append(sock)
    (spool / "deep.toml").write_text("a = " + "[" * 100_000)
    fd = os.open(os.fsencode(spool) + b"/" + BAD_NAME, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, VALID.encode())
    os.close(fd)
    return {
        "fifo.toml": "FIFO",
        "link-to-fifo.toml": "symlink",
        "link-to-zero.toml": "symlink",
        "link-to-shadow.toml": "symlink",
        "dangling.toml": "symlink",
        "zero.toml": "character device",
        "sparse.toml": "bytes",
        "dir.toml": "directory",
        "sock.toml": "socket",
        "deep.toml": "",
        "badname-": "UTF-8",
    }


def test_hostile_spool_entries_never_block_or_crash_the_daemon(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    text = header(tmp_path, spool_dir=str(spool)) + task("idle", "import time; time.sleep(600)")
    text += '[[templates]]\nname = "t"\nkind = "oneshot"\nargv = ["true"]\n'
    log = tmp_path / "daemon.log"
    sockets: list[socket.socket] = []
    expected = _plant(spool, sockets)
    (spool / "good.toml").write_text(VALID)
    daemon = start_daemon(write_config(tmp_path, text), log)
    sock = tmp_path / "state" / "control.sock"
    rejected = spool / "rejected"
    try:
        wait_for(lambda: "control.listening" in log.read_text(), timeout=30, what="daemon up")
        wait_for(
            lambda: rejected.exists() and len(list(rejected.glob("*.error"))) == len(expected),
            timeout=30,
            what="every hostile entry quarantined",
        )
        wait_for(lambda: not (spool / "good.toml").exists(), timeout=10, what="good file taken")
        t0 = time.monotonic()
        status = call(sock, {"op": "status"})
        assert time.monotonic() - t0 < 2.0  # the loop is not blocked
        assert status["daemon"]["pid"] == daemon.pid
        assert "spool.accepted" in log.read_text()
        for name, reason in expected.items():
            errors = [p for p in rejected.glob("*.error") if p.name.startswith(name)]
            assert len(errors) == 1, (name, sorted(p.name for p in rejected.iterdir()))
            assert reason in errors[0].read_text(), (name, errors[0].read_text())
        # Quarantined, not deleted: each entry is in rejected/ as what it was.
        assert stat.S_ISFIFO((rejected / "fifo.toml").lstat().st_mode)
        assert (rejected / "link-to-zero.toml").is_symlink()
        # And the daemon still takes work from the spool afterwards.
        (spool / "late.toml").write_text(VALID)
        wait_for(lambda: not (spool / "late.toml").exists(), timeout=10, what="late file taken")
        t0 = time.monotonic()
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=15) == 0
        assert time.monotonic() - t0 < 10
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        for s in sockets:
            s.close()
    text = log.read_text()
    assert "Traceback" not in text and "surrogates not allowed" not in text


def test_a_spool_file_is_read_only_when_it_is_a_small_regular_file(tmp_path: Path) -> None:
    ok = tmp_path / "ok.toml"
    ok.write_text(VALID)
    assert read_spool_bytes(ok) == VALID.encode()
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (MAX_SPOOL_FILE + 1))
    os.mkfifo(tmp_path / "fifo.toml")
    (tmp_path / "link.toml").symlink_to(ok)
    for path in (big, tmp_path / "fifo.toml", tmp_path / "link.toml"):
        with pytest.raises(Unreadable):
            read_spool_bytes(path)
