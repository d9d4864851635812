"""What a run leader starts with.

Each test starts a real process and has it report, from /proc, what it was
given: descriptors, session, directory, environment, signal state.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from daemon import process

REPORT = r"""
import json, os, stat, sys
fds = {}
for name in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{name}")
    except OSError:
        continue  # the directory listing's own descriptor, already closed
    fds[name] = target
status = dict(line.split(":\t", 1) for line in open("/proc/self/status") if ":\t" in line)
print(json.dumps({
    "fds": fds,
    "fifo": sorted(int(fd) for fd in fds if stat.S_ISFIFO(os.fstat(int(fd)).st_mode)),
    "stdin": sys.stdin.read(),
    "sid_is_pid": os.getsid(0) == os.getpid(),
    "cwd": os.getcwd(),
    "env": dict(os.environ),
    "blocked": status["SigBlk"].strip(),
}))
"""


def _run(
    tmp_path: Path, argv: list[str], stdin_path: str | None = None
) -> tuple[dict[str, object], tuple[int, int]]:
    child = process.spawn(
        argv,
        cwd=str(tmp_path),
        env={"ONLY": "this", "PATH": "/usr/bin:/bin"},
        stdin_path=stdin_path,
    )
    try:
        assert child.out_fd is not None
        os.set_blocking(child.out_fd, True)
        out = b""
        while chunk := os.read(child.out_fd, 65536):
            out += chunk
        os.waitpid(child.pid, 0)
        assert child.leader_fds is not None
        return json.loads(out), child.leader_fds
    finally:
        child.close()


def test_the_leader_gets_its_pipes_its_read_ends_and_nothing_else(tmp_path: Path) -> None:
    report, (out_fd, err_fd) = _run(tmp_path, [sys.executable, "-c", REPORT])
    fds = report["fds"]
    assert isinstance(fds, dict)
    assert sorted(map(int, fds)) == sorted([0, 1, 2, out_fd, err_fd]), fds
    assert fds["0"] == "/dev/null"
    assert report["fifo"] == sorted([1, 2, out_fd, err_fd])
    # The leader holds the read ends of its own output pipes.
    assert fds["1"] == fds[str(out_fd)] and fds["2"] == fds[str(err_fd)]


def test_the_leader_leads_a_session_in_its_directory_with_only_its_environment(
    tmp_path: Path,
) -> None:
    report, _ = _run(tmp_path, [sys.executable, "-c", REPORT])
    assert report["sid_is_pid"] is True
    assert report["cwd"] == str(tmp_path)
    env = report["env"]
    assert isinstance(env, dict)
    assert env.get("ONLY") == "this" and "HOME" not in env
    assert report["blocked"] == "0000000000000000"


def test_stdin_comes_from_the_given_file(tmp_path: Path) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("do the thing")
    report, _ = _run(tmp_path, [sys.executable, "-c", REPORT], stdin_path=str(prompt))
    assert report["stdin"] == "do the thing"
    missing = str(tmp_path / "gone.txt")
    with pytest.raises(process.SpawnError, match="stdin"):
        process.spawn(["true"], cwd=str(tmp_path), env={"PATH": "/bin"}, stdin_path=missing)


def test_sigpipe_is_back_to_its_default_in_the_leader(tmp_path: Path) -> None:
    # A shell reports what it inherited (Python would reset SIGPIPE itself).
    child = process.spawn(
        ["sh", "-c", "grep SigIgn /proc/$$/status"],
        cwd=str(tmp_path),
        env={"PATH": "/usr/bin:/bin"},
    )
    assert child.out_fd is not None
    os.set_blocking(child.out_fd, True)
    line = os.read(child.out_fd, 4096).decode()
    os.waitpid(child.pid, 0)
    child.close()
    ignored = int(line.split()[1], 16)
    assert not ignored & (1 << (13 - 1)), line  # SIGPIPE
    assert not ignored & (1 << (25 - 1)), line  # SIGXFSZ
