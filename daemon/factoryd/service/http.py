"""A tiny HTTP/1.0 endpoint on the event loop: GET /metrics and GET /healthz.

Served on the loop rather than in prometheus_client's thread so that the
scrape-time collector reads daemon state without locks. Requests are
bounded (8 KiB of headers, 5 s to send them); anything else gets 404/405.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
from anyio.abc import SocketStream, TaskStatus
from prometheus_client import CONTENT_TYPE_LATEST

MAX_HEADER = 8192
READ_TIMEOUT = 5.0


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


async def _read_head(stream: SocketStream) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf and b"\n\n" not in buf:
        chunk = await stream.receive(4096)
        buf += chunk
        if len(buf) > MAX_HEADER:
            break
    return buf


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def serve(
    listen: str,
    metrics: Callable[[], bytes],
    healthy: Callable[[], tuple[bool, str]],
    *,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; reports the bound port through `task_status`."""
    host, port = parse_listen(listen)
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port, reuse_port=False)

    async def handle(stream: SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(READ_TIMEOUT):
                    head = await _read_head(stream)
            except (TimeoutError, anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                return
            first = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0].decode("latin-1").split()
            if len(first) < 2:
                reply = _response("400 Bad Request", b"bad request\n")
            elif first[0] not in ("GET", "HEAD"):
                reply = _response("405 Method Not Allowed", b"only GET\n")
            else:
                path = first[1].split("?", 1)[0]
                if path == "/metrics":
                    reply = _response("200 OK", metrics(), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    ok, why = healthy()
                    status = "200 OK" if ok else "503 Service Unavailable"
                    reply = _response(status, why.encode() + b"\n")
                else:
                    reply = _response("404 Not Found", b"try /metrics or /healthz\n")
                if first[0] == "HEAD":
                    reply = reply.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
            try:
                await stream.send(reply)
            except (anyio.BrokenResourceError, OSError):
                return

    async with listener:
        bound = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started(bound)
        await listener.serve(handle)
