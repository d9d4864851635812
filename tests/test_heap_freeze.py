"""The daemon freezes its start-up heap before the first pass, so a full
collection no longer walks every module, class and config object (a pause of
the loop measured at ~110 ms in bench/loopwork.py's driver). Checked in a fresh
interpreter: after the daemon's imports and the freeze, what the collector
still tracks is a small fraction of what start-up made; and the young
generation is collected less often than CPython's default."""

from __future__ import annotations

import subprocess
import sys

import factoryd.service.daemon as d

CODE = """
import gc
import factoryd.service.daemon as d
before = len(gc.get_objects())
d.tune_collector()
print(before, gc.get_freeze_count(), len(gc.get_objects()), gc.get_threshold()[0])
"""


def test_start_up_objects_leave_the_collectors_sight() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CODE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    before, frozen, after, young = (int(x) for x in out)
    assert frozen > 20_000 and frozen >= before // 2, out
    assert after < before // 20, out
    assert young == d.YOUNG_COLLECTION_EVERY > 700, out  # collected less often than the default
