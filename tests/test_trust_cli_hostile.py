"""No traceback a user can reach: every verb against a corpus of hostile input.

Bad paths (missing, directories, FIFOs, devices, loops, huge, not UTF-8),
hostile file contents, huge and undecodable arguments, missing sockets and
sockets that answer garbage. Each case runs the real `main` in a process of
its own (forked from one interpreter that has imported factoryd, so a
hundred cases cost seconds, not minutes) with a memory limit, stdin, stdout
and stderr of its own, and a deadline. Any `Traceback` on either stream
fails the test; so does a case that outlives its deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from daemon_kit import ROOT, header, task, write_config

DRIVER = r"""
import json, os, resource, sys, time, traceback
from factoryd.cli import main

def child(argv, stdin, out, err):
    resource.setrlimit(resource.RLIMIT_AS, (1 << 29, 1 << 29))
    fd = os.open(stdin, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(fd, True)
    os.dup2(fd, 0)
    os.dup2(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
    os.dup2(os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
    sys.stdin = open(0, "r", closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False, errors="backslashreplace")
    try:
        code = main([os.fsdecode(bytes.fromhex(a)) for a in argv])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:
        traceback.print_exc()  # what the interpreter would show the user
        code = 99
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:
        traceback.print_exc(file=open(2, "w", closefd=False))
    os._exit(code)

cases = json.load(sys.stdin)
running, results, todo = {}, {}, list(enumerate(cases))
while todo or running:
    while todo and len(running) < 6:
        i, case = todo.pop(0)
        pid = os.fork()
        if pid == 0:
            child(case["argv"], case["stdin"], case["out"], case["err"])
        running[pid] = (i, time.monotonic())
    time.sleep(0.005)
    for pid, (i, t0) in list(running.items()):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            results[i] = os.waitstatus_to_exitcode(status)
            del running[pid]
        elif time.monotonic() - t0 > 15:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            results[i] = "hang"
            del running[pid]
print(json.dumps(results))
"""


@contextlib.contextmanager
def garbage_server(path: Path, reply: bytes) -> Iterator[None]:
    """A Unix socket that answers every request with `reply` (then hangs up)."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(64)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(1 << 16)
                    conn.sendall(reply)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        server.close()


def _paths(tmp: Path) -> dict[str, str]:
    """Hostile files, by what they are."""
    rng = random.Random(3)
    os.mkfifo(tmp / "fifo")
    (tmp / "dir").mkdir()
    (tmp / "loop").symlink_to(tmp / "loop")
    (tmp / "empty").write_bytes(b"")
    (tmp / "binary").write_bytes(bytes(rng.getrandbits(8) for _ in range(5000)))
    (tmp / "latin1").write_bytes(b'[daemon]\nstate_dir = "caf\xe9"\n')
    (tmp / "nested").write_text("a = " + "[" * 100_000)
    (tmp / "nested-tables").write_text("a = " + "{ b = " * 50_000)
    (tmp / "json-nested").write_text("[" * 100_000)
    (tmp / "notoml").write_text("this is = = not toml\n")
    (tmp / "wrong-types").write_text('daemon = 5\ntasks = "x"\n[[arms]]\nname = 3\n')
    with (tmp / "sparse").open("wb") as f:
        f.truncate(4 << 20)
    return {
        "missing": str(tmp / "missing"),
        "dir": str(tmp / "dir"),
        "fifo": str(tmp / "fifo"),
        "dev-zero": "/dev/zero",
        "dev-null": "/dev/null",
        "proc-mem": "/proc/self/mem",
        "loop": str(tmp / "loop"),
        "long": "/" + "x" * 5000,
        "undecodable": os.fsdecode(os.fsencode(tmp) + b"/\xff\xfe"),
        "empty": str(tmp / "empty"),
        "binary": str(tmp / "binary"),
        "latin1": str(tmp / "latin1"),
        "nested": str(tmp / "nested"),
        "nested-tables": str(tmp / "nested-tables"),
        "json-nested": str(tmp / "json-nested"),
        "notoml": str(tmp / "notoml"),
        "wrong-types": str(tmp / "wrong-types"),
        "sparse": str(tmp / "sparse"),
    }


GARBAGE_REPLIES = {
    "silent": b"",
    "random": bytes(random.Random(5).getrandbits(8) for _ in range(3000)),
    "not-json": b"hello\n",
    "list": b"[1, 2]\n",
    "ok-no-result": b'{"ok": true}\n',
    "ok-string": b'{"ok": true, "result": "x"}\n',
    "error-number": b'{"ok": false, "error": 5}\n',
    "wrong-shapes": b'{"ok": true, "result": {"daemon": 1, "tasks": 2, "id": []}}\n',
    "huge": b'{"ok": true, "result": "' + b"x" * (4 << 20) + b'"}\n',
    "nested": b"[" * 100_000,
}


UNDECODABLE = os.fsdecode(b"\xff\xfe-\xc3")
HUGE = "x" * 100_000


def _cases(tmp: Path, good: str) -> list[list[str]]:
    paths = _paths(tmp)
    sockets = [str(tmp / f"sock-{name}") for name in GARBAGE_REPLIES]
    sockets += [paths[k] for k in ("missing", "dir", "fifo", "dev-null", "long", "undecodable")]
    sockets.append(paths["empty"])  # a regular file where a socket should be
    cases: list[list[str]] = [
        [],
        ["--version"],
        ["nonsense-verb"],
        [UNDECODABLE],
        ["check"],
        ["status", "--json", "--socket"],
        ["run", "--config", good, "--log-format", UNDECODABLE],
    ]
    for name, path in paths.items():
        if name not in ("dev-null", "empty"):  # an empty config is valid: it would run
            cases.append(["run", "--config", path])
        cases += [
            ["check", "--config", path],
            ["route", "--config", path, "--task", "x"],
            ["status", "--config", path],
            ["route", "--config", good, "--task", "svc", "--state", path],
            ["submit", "--config", good, "--file", path],
        ]
    for sock in sockets:
        cases += [
            ["status", "--socket", sock],
            ["state", "dump", "--socket", sock],
            ["cancel", "--socket", sock, UNDECODABLE],
            ["reset", "--socket", sock, HUGE],
            ["submit", "--socket", sock, "--template", UNDECODABLE, "-k", HUGE, "--set", "a=[1,"],
        ]
    cases += [
        ["route", "--config", good, "--task", UNDECODABLE],
        ["route", "--config", good, "--task", HUGE],
        ["route", "--config", good, "--task-json", "[" * 100_000],
        ["route", "--config", good, "--task-json", '{"name": 5, "argv": {}}'],
        ["route", "--config", good, "--task-json", '{"timeout": "forever", "tags": 7}'],
        ["route", "--config", good, "--task-json", UNDECODABLE],
        ["route", "--config", good, "--task", "svc", "--now", UNDECODABLE],
        ["route", "--config", good, "--task", "svc", "--now", "9999-99-99T99:99:99Z"],
        ["route", "--config", good, "--task", "svc", "--state", "-"],
        ["route", "--config", good, "--task", "svc", "--force", HUGE, "--exclude", ""],
        ["submit", "--config", good, "--template", "t", "--set", UNDECODABLE],
        ["submit", "--config", good, "--file", "-"],
        ["status", "--config", good],  # a valid config, no daemon: the socket is missing
        ["route", "--config", good, "--task-json", '{"a": ' * 100_000],
    ]
    return cases


def _run_all(tmp: Path, cases: list[list[str]], stdin: str) -> list[tuple[list[str], object, str]]:
    out_dir = tmp / "out"
    out_dir.mkdir()
    encoded = [
        {
            "argv": [os.fsencode(a).hex() for a in argv],
            "stdin": stdin,
            "out": str(out_dir / f"{i}.out"),
            "err": str(out_dir / f"{i}.err"),
        }
        for i, argv in enumerate(cases)
    ]
    done = subprocess.run(
        [sys.executable, "-c", DRIVER],
        input=json.dumps(encoded),
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(tmp)},  # the debug log goes here, not to /tmp
    )
    assert done.returncode == 0, done.stderr[-3000:]
    codes = json.loads(done.stdout)
    results = []
    for i, argv in enumerate(cases):
        shown = (out_dir / f"{i}.out").read_bytes() + (out_dir / f"{i}.err").read_bytes()
        results.append((argv, codes[str(i)], shown.decode("utf-8", "replace")))
    return results


def test_no_verb_shows_a_traceback_whatever_it_is_given(tmp_path: Path) -> None:
    text = header(tmp_path) + task("svc", "pass")
    text += '[[templates]]\nname = "t"\nkind = "oneshot"\nargv = ["true"]\n'
    good = str(write_config(tmp_path, text))
    with contextlib.ExitStack() as stack:
        for name, reply in GARBAGE_REPLIES.items():
            stack.enter_context(garbage_server(tmp_path / f"sock-{name}", reply))
        cases = _cases(tmp_path, good)
        results = _run_all(tmp_path, cases, stdin=str(tmp_path / "binary"))
    shown = lambda argv: [a[:60] for a in argv]  # noqa: E731
    tracebacks = [(shown(a), out[-400:]) for a, _, out in results if "Traceback" in out]
    hangs = [a for a, code, _ in results if code == "hang"]
    crashes = [(shown(a), code) for a, code, _ in results if code not in (0, 1, 2, "hang")]
    print(f"CLI inputs tried: {len(results)}, tracebacks: {len(tracebacks)}, hangs: {len(hangs)}")
    assert tracebacks == []
    assert crashes == []
    assert hangs == []
    for argv, code, out in results:
        if code in (1, 2) and argv and argv[0] != "route":  # errors are short, never a dump
            assert len(out.splitlines()) <= 12, (shown(argv), out[:500])
    internal = [out for _, _, out in results if "internal error" in out]
    assert internal == []  # each hostile input gets its own message, not a generic one
    for argv, expected in _specific(tmp_path, good).items():
        (out,) = [out for a, _, out in results if a == list(argv)]
        assert expected in out, (shown(list(argv)), out[:300])


def _specific(tmp: Path, good: str) -> dict[tuple[str, ...], str]:
    """Cases once left out or ending in "internal error", and the words of their
    one-line answer."""
    sock = lambda name: str(tmp / f"sock-{name}")  # noqa: E731
    fifo, loop = str(tmp / "fifo"), str(tmp / "loop")
    return {
        ("check", "--config", fifo): "not a regular file (a FIFO)",
        ("check", "--config", "/dev/zero"): "not a regular file (a character device)",
        ("check", "--config", loop): "Symlink loop",
        ("check", "--config", str(tmp / "nested")): "nested too deeply",
        ("route", "--config", good, "--task", "svc", "--state", fifo): "not a regular file",
        ("route", "--config", good, "--task", "svc", "--state", "/dev/zero"): "not a regular",
        ("route", "--config", good, "--task", "svc", "--state", loop): "symbolic links",
        ("submit", "--config", good, "--file", fifo): "not a regular file (a FIFO)",
        ("submit", "--config", good, "--file", "/dev/zero"): "not a regular file",
        ("submit", "--config", good, "--file", str(tmp / "nested-tables")): "nested too deeply",
        ("route", "--config", good, "--task-json", "[" * 100_000): "nested too deeply",
        ("route", "--config", good, "--task-json", '{"a": ' * 100_000): "nested too deeply",
        ("status", "--socket", sock("ok-no-result")): "unknown status shape",
        ("status", "--socket", sock("ok-string")): "unknown status shape",
        ("status", "--socket", sock("wrong-shapes")): "unknown status shape",
        ("status", "--socket", sock("huge")): "unknown status shape",
        ("status", "--socket", sock("random")): "is it factoryd's socket?",
        ("reset", "--socket", sock("silent"), HUGE): "hung up without an answer",
    }
