"""The control socket answers garbage with an error and keeps serving.

Kept apart from the daemon-level socket abuse in test_faults.py: these
drive the server alone, in-process, over a real Unix socket.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import anyio
import pytest
from factoryd.service.control import ControlError, call, serve


def send_raw(path: Path, data: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "line",
    [b"[" * 200_000, b'{"op": ' + b"[" * 200_000, b'{"a":' * 100_000],
    ids=["arrays", "inside-an-object", "objects"],
)
def test_a_request_nested_too_deeply_is_answered_and_the_server_keeps_serving(
    tmp_path: Path, line: bytes
) -> None:
    path = tmp_path / "control.sock"

    async def status(_request: dict[str, Any]) -> str:
        return "fine"

    async def main() -> tuple[bytes, Any]:
        async with anyio.create_task_group() as tg:
            await tg.start(serve, path, {"status": status})
            answer = await anyio.to_thread.run_sync(send_raw, path, line + b"\n")
            after = await anyio.to_thread.run_sync(call, path, {"op": "status"})
            tg.cancel_scope.cancel()
        return answer, after

    answer, after = anyio.run(main)
    assert b'"ok": false' in answer and b"nested too deeply" in answer
    assert after == "fine"


def test_the_client_reports_an_unreachable_socket_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ControlError, match="no control socket"):
        call(tmp_path / "absent.sock", {"op": "status"})
