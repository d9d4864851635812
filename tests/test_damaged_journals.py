"""Damaged, truncated and missing journals: refused in one line, salvaged on request.

The journal is the only record of acknowledged work; a daemon that took an
empty or broken file for a new journal would forget it without a word.
Each case here was reproduced by hand on earlier code (a 33-line
traceback; 20 of 20 acknowledged submissions silently gone).
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

import journal_kit
import pytest
from daemon_kit import factoryd
from factoryd.state import journal as j
from factoryd.state import salvage
from factoryd.state.integrity import marker_for
from factoryd.state.journal import Journal
from factoryd.state.schema import JournalError

ROWS = 600


def config_for(tmp_path: Path) -> Path:
    path = tmp_path / "factoryd.toml"
    path.write_text(
        '[daemon]\nstate_dir = "state"\nmetrics_listen = "off"\nlog_format = "json"\n'
        '[[arms]]\nname = "local"\ncli = "command"\n'
    )
    return path


def filled(path: Path) -> None:
    """A journal with ROWS acknowledged submissions, checkpointed into the main file."""
    db = Journal(path)
    now = time.time()
    db.apply_sync(
        j.op_submission(
            f"sub-{i:04d}",
            None,
            "adhoc",
            {"spec": {"argv": ["true"], "pad": "x" * 300}},
            "socket",
            now,
        )
        for i in range(ROWS)
    )
    db.close()  # the last connection checkpoints the WAL into the file


def damage_a_page(path: Path, page: int) -> None:
    with path.open("r+b") as f:
        f.seek(page * 4096 + 100)
        f.write(os.urandom(2000))


def one_line_failure(*args: str) -> str:
    out = factoryd(*args)
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    return lines[0]


def test_a_new_state_dir_gets_a_journal_and_the_marker_of_its_use(tmp_path: Path) -> None:
    path = tmp_path / "state" / "journal.db"
    Journal(path).close()
    assert path.stat().st_size > 0 and marker_for(path).exists()


def test_a_journal_from_before_the_marker_is_opened_and_marked(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    filled(path)
    marker_for(path).unlink()
    Journal(path).close()
    assert marker_for(path).exists()
    assert journal_kit.count_submissions(path) == ROWS


@pytest.mark.parametrize("how", ["truncated", "deleted"])
def test_a_journal_lost_after_use_is_refused_never_replaced(tmp_path: Path, how: str) -> None:
    path = tmp_path / "journal.db"
    filled(path)
    if how == "truncated":
        path.write_bytes(b"")
    else:
        path.unlink()
    with pytest.raises(JournalError) as exc:
        Journal(path)
    message = str(exc.value)
    assert len(message.splitlines()) == 1
    assert str(path) in message and str(marker_for(path)) in message
    assert ("empty" if how == "truncated" else "missing") in message
    assert not path.exists() or path.stat().st_size == 0  # nothing was created in its place


def test_run_refuses_a_truncated_journal_in_one_line(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    path = tmp_path / "state" / "journal.db"
    filled(path)
    path.write_bytes(b"")
    line = one_line_failure("run", "--config", str(config))
    assert str(path) in line and "empty" in line


def test_a_file_that_is_not_a_database_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    path.write_bytes(b"this is not a database, it is a shopping list\n" * 200)
    with pytest.raises(JournalError) as exc:
        Journal(path)
    message = str(exc.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"journal {path}: ") and "journal recover" in message


def test_a_damaged_journal_is_refused_by_run_and_check_in_one_line(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    path = tmp_path / "state" / "journal.db"
    filled(path)
    damage_a_page(path, 20)
    with pytest.raises(JournalError, match=r"damaged|cannot be used"):
        Journal(path)
    for verb in (("run",), ("journal", "check")):
        line = one_line_failure(*verb, "--config", str(config))
        assert str(path) in line and "journal recover" in line


def test_recover_salvages_readable_rows_and_keeps_the_damaged_file(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    path = tmp_path / "state" / "journal.db"
    filled(path)
    damage_a_page(path, 20)
    damaged_bytes = path.read_bytes()
    out = factoryd("journal", "recover", "--config", str(config))
    assert out.returncode == 0, out.stderr
    kept = [p for p in path.parent.iterdir() if p.name.startswith("journal.db.damaged-")]
    assert len(kept) == 1 and kept[0].read_bytes() == damaged_bytes
    assert str(kept[0]) in out.stdout
    salvaged = journal_kit.count_submissions(path)
    assert ROWS * 0.9 <= salvaged < ROWS  # one page of rows lost, the rest kept
    Journal(path).close()  # the daemon takes it now
    ok = factoryd("journal", "check", "--config", str(config))
    assert ok.returncode == 0 and f"submissions {salvaged}" in ok.stdout


def test_recover_waits_for_no_daemon(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    filled(path)
    fd = os.open(tmp_path / "daemon.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a running daemon holds it
        with pytest.raises(JournalError, match="stop it first"):
            salvage.recover(path)
    finally:
        os.close(fd)
    assert journal_kit.count_submissions(path) == ROWS  # untouched


def test_check_counts_a_healthy_journal(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    filled(tmp_path / "state" / "journal.db")
    out = factoryd("journal", "check", "--config", str(config))
    assert out.returncode == 0 and f"submissions {ROWS}" in out.stdout and "OK" in out.stdout


def test_check_of_a_state_dir_never_used_is_not_a_failure(tmp_path: Path) -> None:
    out = factoryd("journal", "check", "--config", str(config_for(tmp_path)))
    assert out.returncode == 0 and "none yet" in out.stdout
    assert not (tmp_path / "state" / "journal.db").exists()  # checking created nothing


def test_recover_of_nothing_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    filled(path)
    path.write_bytes(b"")
    with pytest.raises(JournalError, match="nothing to salvage"):
        salvage.recover(path)
