"""Shell completion and the man page come from the parser, so they list every verb."""

from __future__ import annotations

import pytest
from daemon_kit import factoryd
from factoryd.cli import build_parser

VERBS = [
    "status",
    "logs",
    "show",
    "wait",
    "stop",
    "start",
    "restart",
    "reset",
    "release",
    "reload",
    "submit",
    "cancel",
    "route",
    "check",
]


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_know_every_verb(shell: str) -> None:
    out = factoryd("completion", shell)
    assert out.returncode == 0, out.stderr
    for verb in VERBS:
        assert verb in out.stdout, verb
    if shell == "zsh":
        assert out.stdout.startswith("#compdef factoryd")


def test_the_man_page_documents_every_verb_and_the_exit_statuses() -> None:
    from argparse_manpage.manpage import Manpage

    page = str(Manpage(build_parser()))
    assert page.startswith(".TH")
    for verb in VERBS:
        assert f"factoryd {verb}" in page.replace("\\-", "-"), verb
    assert "Exit status" in page
