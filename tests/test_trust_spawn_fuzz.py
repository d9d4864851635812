"""The spawn helper survives any request, beside a live service run it must not touch.

A real helper process, spoken to over its real socket as the daemon does:
first a healthy long-running run, then hundreds of requests it cannot carry
out (NUL bytes in argv, env names with `=`, empty programs, wrong types,
garbage datagrams, the wrong number of descriptors, FIFOs for stdin and the
spawn log). Each must be answered with an error for that request alone;
the helper must live, the service run must keep its pid and its output, and
the helper must still start a valid run afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from daemon_kit import count_events, events, header, start_daemon, tagged, task, write_config
from factoryd.proc import spawner
from factoryd.service.control import ControlError, call
from proc_kit import wait_for

SERVICE = (
    "import itertools, time\n"
    "for i in itertools.count():\n    print(i, flush=True)\n    time.sleep(0.01)"
)


class Helper:
    def __init__(self) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(spawner.HELPER), str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.sock.settimeout(10)
        self.exits: list[list[int]] = []

    def send(self, payload: bytes, fds: list[int]) -> dict[str, Any]:
        socket.send_fds(self.sock, [payload], fds)
        while True:
            data, got, _flags, _addr = socket.recv_fds(self.sock, 1 << 16, 1)
            assert data, "the helper hung up"
            reply = json.loads(data)
            if "exits" in reply:
                self.exits += reply["exits"]
                continue
            reply["_fds"] = got
            return reply

    def close(self) -> None:
        self.sock.close()
        self.proc.wait(timeout=10)


def _pipes() -> tuple[list[int], list[int]]:
    """(the four fds a request carries, every fd to close after it)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    return [out_w, err_w, out_r, err_r], [out_r, out_w, err_r, err_w]


def _sent_id(payload: bytes) -> Any:
    try:
        sent = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return sent.get("id") if isinstance(sent, dict) else None


def _request(ident: Any, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": ident,
        "argv": [sys.executable, "-c", "pass"],
        "env": {"PATH": "/usr/bin:/bin"},
        "cwd": "/",
        "stdin": None,
    }
    base.update(kw)
    return base


def _hostile(rng: random.Random, tmp: Path) -> list[tuple[bytes, int]]:
    """(datagram, how many pipe fds to attach) for every hostile request."""
    fifo = tmp / "fifo"
    os.mkfifo(fifo)
    bad_fields: list[dict[str, Any]] = [
        {"argv": []},
        {"argv": [""]},
        {"argv": ["true\0"]},
        {"argv": [sys.executable, "-c", "pass\0"]},
        {"argv": [1, 2]},
        {"argv": "true"},
        {"argv": None},
        {"argv": [None]},
        {"argv": [["x"]]},
        {"argv": ["/nonexistent/program"]},
        {"argv": ["/etc/passwd"]},
        {"argv": ["x" * 200_000]},
        {"env": {"A=B": "x"}},
        {"env": {"": "x"}},
        {"env": {"A\0B": "x"}},
        {"env": {"A": "x\0y"}},
        {"env": {"A": 1}},
        {"env": []},
        {"env": "PATH=/bin"},
        {"cwd": 1},
        {"cwd": None},
        {"cwd": "/tmp\0"},
        {"cwd": "/nonexistent"},
        {"cwd": "/etc/passwd"},
        {"stdin": 7},
        {"stdin": "/nonexistent"},
        {"stdin": "bad\0path"},
    ]
    # Fields that are fine alone, paired with a broken one so nothing runs.
    odd_but_harmless: list[dict[str, Any]] = [
        {"stdin": str(fifo)},
        {"log": str(fifo), "run": "r1"},
        {"log": "/dev/full", "run": "r2"},
        {"log": 5, "run": ["x"]},
        {"id": "not-an-int"},
        {"id": [1]},
        {"id": 1.5},
        {"id": 10**40},
        {"run": "\ud800", "log": str(tmp / "spawns.log")},
        {"extra": {"deep": [[[]]]}},
    ]
    out: list[tuple[bytes, int]] = []
    for i, fields in enumerate(bad_fields):
        out.append((json.dumps(_request(1000 + i, **fields)).encode(), 4))
    for i in range(300):
        fields = dict(rng.choice(bad_fields))
        fields.update(rng.choice(odd_but_harmless))
        out.append((json.dumps(_request(2000 + i, **fields)).encode(), 4))
    for _ in range(80):
        junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 3000)))
        out.append((junk, rng.choice([0, 1, 4])))
    out += [
        (b"[]", 4),
        (b"null", 4),
        (b'"x"', 0),
        (b"[" * 100_000, 4),
        (json.dumps(_request(3000, argv=["true"])).encode(), 0),  # no descriptors
        (json.dumps(_request(3001, argv=["true"])).encode(), 1),
        (json.dumps(_request(3002, argv=["true"])).encode(), 3),
    ]
    return out


def test_fuzzed_spawn_requests_fail_alone_and_leave_a_live_service_untouched(
    tmp_path: Path,
) -> None:
    rng = random.Random(14)
    helper = Helper()
    service_pid = None
    spawned: list[int] = []
    try:
        fds, mine = _pipes()
        reply = helper.send(
            json.dumps(_request(1, argv=[sys.executable, "-c", SERVICE])).encode(), fds
        )
        service_pid = reply["pid"]
        out_r = mine[0]
        for fd in mine[1:]:
            os.close(fd)
        for fd in reply["_fds"]:
            os.close(fd)
        assert os.read(out_r, 4096)  # it talks
        cases = _hostile(rng, tmp_path)
        for payload, nfds in cases:
            fds, mine = _pipes()
            try:
                answer = helper.send(payload, fds[:nfds])
            finally:
                for fd in mine:
                    os.close(fd)
            for fd in answer["_fds"]:
                os.close(fd)
            if "pid" in answer:  # nothing hostile should start; if it did, it is killed
                spawned.append(answer["pid"])
                continue
            assert answer["errno"] > 0, (payload[:200], answer)
            expected = _sent_id(payload)
            if type(expected) is int:  # the daemon's ids are ints: only those come back
                assert answer["id"] == expected
            else:
                assert answer["id"] == -1
            assert helper.proc.poll() is None
        assert spawned == []
        # The service run: same process, still talking, never reported as ended.
        os.set_blocking(out_r, False)
        with contextlib.suppress(BlockingIOError):
            while os.read(out_r, 1 << 16):
                pass
        os.set_blocking(out_r, True)
        assert os.read(out_r, 4096)
        os.kill(service_pid, 0)
        assert all(pid != service_pid for pid, _ in helper.exits)
        # And the helper still starts a valid run.
        fds, mine = _pipes()
        ok = helper.send(json.dumps(_request(9, argv=["true"])).encode(), fds)
        for fd in mine + ok["_fds"]:
            os.close(fd)
        assert ok["pid"] > 0
        print(f"spawn requests fuzzed: {len(cases)}, unrelated runs affected: 0")
    finally:
        if service_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(service_pid, signal.SIGKILL)
        for pid in spawned:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        helper.close()


def test_unspawnable_submissions_beside_a_live_service_fail_alone(tmp_path: Path) -> None:
    """Through the whole daemon: each is refused at submit or fails its own run;
    the service run keeps its pid and is never restarted."""
    tag = uuid.uuid4().hex
    text = header(tmp_path) + task("svc", SERVICE, env={"TEST_TAG": tag})
    log = tmp_path / "daemon.log"
    daemon = start_daemon(write_config(tmp_path, text), log)
    sock = tmp_path / "state" / "control.sock"
    hostile = [
        {"argv": ["true\0", "x"]},
        {"argv": [sys.executable, "-c", "pass\0"]},
        {"argv": [""]},
        {"argv": ["true"], "env": {"A=B": "x"}},
        {"argv": ["true"], "env": {"A": "x\0y"}},
        {"argv": ["true"], "workdir": "/tmp\0x"},
    ]
    try:
        wait_for(lambda: len(tagged(tag)) == 1, timeout=30, what="service up")
        pid = tagged(tag)[0].pid
        accepted = []
        for spec in hostile:
            with contextlib.suppress(ControlError):  # refused up front: as good
                accepted.append(call(sock, {"op": "submit", "spec": spec})["id"])
        wait_for(
            lambda: count_events(log, "run.finished") >= len(accepted),
            timeout=20,
            what="every hostile submission to end",
        )
        assert [p.pid for p in tagged(tag)] == [pid]
        assert (
            sum(e.get("task") == "svc" for e in events(log) if e.get("event") == "run.started") == 1
        )
        assert daemon.poll() is None
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
    assert "Traceback" not in log.read_text()
