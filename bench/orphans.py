"""Orphans: a program that double-forks with setsid, stopped by each supervisor.
Processes left behind afterwards (target 0; supervisord's figure printed, with its
default settings and with stopasgroup/killasgroup).

The program is the one from the peer measurements:
    sh -c 'setsid sleep 3601.5 & sleep 3602.5'
(the sleep durations mark its processes; sh is the program under test here,
not something factoryd uses).
"""

from __future__ import annotations

import contextlib

import psutil
from common import (
    Results,
    Row,
    expect,
    factoryd_config,
    factoryd_task,
    start_factoryd,
    start_supervisord,
    stop,
    supervisord_config,
    tmpdir,
    wait_until,
)

PROGRAM = ["sh", "-c", "setsid sleep 3601.5 & sleep 3602.5"]


def marked() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if cmd[:1] == ["sleep"] and cmd[1:2] in (["3601.5"], ["3602.5"]):
            found.append(proc)
    return found


def cleanup() -> None:
    for proc in marked():
        with contextlib.suppress(psutil.Error):
            proc.kill()


def factoryd() -> int:
    cleanup()
    work = tmpdir("orphans-factoryd")
    daemon = start_factoryd(factoryd_config(work, [factoryd_task("double", PROGRAM)]), work / "log")
    expect(
        lambda: len(marked()) == 2,
        30,
        "orphans: both sleeps under factoryd",
        lambda: len(marked()),
    )
    stop(daemon)
    wait_until(lambda: not marked(), 3)
    left = len(marked())
    cleanup()
    return left


def supervisord(**options: object) -> int:
    cleanup()
    work = tmpdir("orphans-supervisord")
    sup = start_supervisord(supervisord_config(work, {"double": PROGRAM}, startsecs=0, **options))
    expect(
        lambda: len(marked()) == 2,
        30,
        "orphans: both sleeps under supervisord",
        lambda: len(marked()),
    )
    stop(sup)
    wait_until(lambda: not marked(), 3)
    left = len(marked())
    cleanup()
    return left


def run(results: Results) -> None:
    print("orphans: stop a program whose child double-forked with setsid", flush=True)
    ours = factoryd()
    plain = supervisord()
    grouped = supervisord(stopasgroup="true", killasgroup="true")
    results.add(
        Row(
            "orphans",
            "processes left after stop",
            str(ours),
            f"{plain} (default), {grouped} (stopasgroup/killasgroup)",
            "-",
            "0",
            ours == 0,
        )
    )


if __name__ == "__main__":
    run(Results())
