"""What a daemon loads at start: nothing it does not serve or use (memory at rest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from daemon_kit import count_events, free_port, header, start_daemon, task, write_config
from proc_kit import wait_for

AIOHTTP = "/site-packages/aiohttp/"


def _mapped_files(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _daemon_maps(tmp_path: Path, metrics_listen: str) -> str:
    """The files mapped by a live daemon once its first run started."""
    tmp_path.mkdir()
    text = header(tmp_path, metrics_listen=metrics_listen)
    text += task("t", "import time; time.sleep(60)")
    log = tmp_path / "daemon.log"
    daemon = start_daemon(write_config(tmp_path, text), log)
    try:
        wait_for(lambda: count_events(log, "run.started") == 1, timeout=30, what="a run")
        return _mapped_files(daemon.pid)
    finally:
        daemon.terminate()
        daemon.wait(timeout=20)


def test_aiohttp_is_loaded_only_when_something_is_served(tmp_path: Path) -> None:
    """With metrics off and no [web] listen, nothing is served: aiohttp (about
    10 MiB resident) is never imported. Served, it is (its C parser is mapped)."""
    assert AIOHTTP not in _daemon_maps(tmp_path / "off", "off")
    assert AIOHTTP in _daemon_maps(tmp_path / "on", f"127.0.0.1:{free_port()}")


def test_the_daemon_loads_structlog_without_rich_and_leaves_rich_importable() -> None:
    """structlog imports rich when it can (import-linter installs it), about 5 MiB
    the daemon never uses; service/boot.py hides it for that one import only."""
    code = (
        "import sys\n"
        "import factoryd.service.boot, factoryd.service.daemon\n"
        "assert 'structlog' in sys.modules\n"
        "print('rich' in sys.modules)\n"
        "import rich\n"
        "print(rich.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "rich"]
