"""The descriptor limit: raised for the daemon, not for its runs; a warning
when max_concurrent cannot fit it. Limits are per process, so each case runs
in a child with the limits it needs."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from daemon_kit import header, write_config
from factoryd.proc import process
from factoryd.proc.spawner import Spawner

ROOT = Path(__file__).resolve().parent.parent


def _child(code: str, soft: int, hard: int) -> str:
    """Run `code` in a Python child whose descriptor limit is (soft, hard)."""
    prelude = f"import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard}))\n"
    done = subprocess.run(
        [sys.executable, "-c", prelude + code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout


def test_the_daemon_raises_its_soft_limit_to_the_hard_one() -> None:
    hard = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 4096)
    out = _child(
        "from factoryd.proc.fdlimit import raise_soft_limit\n"
        "print(raise_soft_limit(), resource.getrlimit(resource.RLIMIT_NOFILE))\n",
        soft=256,
        hard=hard,
    )
    assert out.split() == ["(256,", f"{hard})", f"({hard},", f"{hard})"]


@pytest.mark.anyio
async def test_leaders_get_the_limit_the_daemon_started_with(tmp_path: Path) -> None:
    helper = Spawner()
    helper.start(leader_nofile=300)
    try:
        child = await process.start(
            helper, ["sh", "-c", "ulimit -n"], cwd=str(tmp_path), env={"PATH": "/usr/bin:/bin"}
        )
        assert child.out_fd is not None
        os.set_blocking(child.out_fd, True)
        assert os.read(child.out_fd, 100).decode().strip() == "300"
        with anyio.fail_after(10):
            while not child.poll()[0]:
                await anyio.sleep(0.01)
        child.close()
    finally:
        helper.close()


def _events_of_a_reconciler_with(tmp_path: Path, max_concurrent: int) -> list[dict]:
    """The log events of a reconciler taking a config, in a child whose hard
    descriptor limit is 2048."""
    config = write_config(tmp_path, header(tmp_path, max_concurrent=max_concurrent))
    code = (
        "import sys\n"
        "from factoryd.proc.fdlimit import raise_soft_limit\n"
        "from factoryd.observe.logs import configure\n"
        "from factoryd.config.loader import load_config\n"
        "from factoryd.reconcile.reconciler import Reconciler\n"
        "raise_soft_limit()\n"
        "configure('json', 'info', stream=sys.stdout)\n"
        f"Reconciler(load_config({str(config)!r}))\n"
    )
    return [json.loads(line) for line in _child(code, soft=1024, hard=2048).splitlines()]


def test_a_max_concurrent_the_limit_cannot_hold_is_logged(tmp_path: Path) -> None:
    # Raised to 2048, the limit still cannot hold 1000 runs (about 4,256
    # descriptors): the reconciler says so when it takes the config.
    (tmp_path / "big").mkdir()
    (tmp_path / "small").mkdir()
    events = _events_of_a_reconciler_with(tmp_path / "big", 1000)
    warned = [e for e in events if e["event"] == "limits.nofile"]
    assert len(warned) == 1 and warned[0]["level"] == "warning"
    reason = warned[0]["reason"]
    assert "max_concurrent = 1000" in reason and "2048" in reason and "LimitNOFILE" in reason
    events = _events_of_a_reconciler_with(tmp_path / "small", 100)
    assert not [e for e in events if e["event"] == "limits.nofile"]
