"""The local control socket: JSON lines over a Unix socket, mode 0600.

One request per connection: the client sends one JSON object on one line
(`{"op": "status"}`), the daemon answers one JSON object on one line
(`{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`).
Requests are bounded (1 MiB, 10 s); garbage gets an error answer and the
connection is closed, never an exception in the daemon.

Read-only operations are answered on the spot; operations that change
state are handed to the reconciler's loop, which owns that state.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import SocketAttribute, SocketStream, TaskStatus

MAX_REQUEST = 1024 * 1024
REQUEST_TIMEOUT = 10.0

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ControlError(Exception):
    """An operation refused with a message for the operator."""


async def serve(
    path: Path,
    handlers: dict[str, Handler],
    *,
    task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.is_socket():
            path.unlink()
    old = os.umask(0o177)  # the socket is created 0600: no window where others can connect
    try:
        listener = await anyio.create_unix_listener(path)
    finally:
        os.umask(old)
    path.chmod(0o600)

    async def handle(stream: SocketStream) -> None:
        async with stream:
            reply = await _answer(stream, handlers, _peer(stream))
            with contextlib.suppress(anyio.BrokenResourceError, OSError):
                await stream.send(json.dumps(reply, default=str).encode() + b"\n")

    try:
        async with listener:
            task_status.started()
            await listener.serve(handle)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def _peer(stream: SocketStream) -> dict[str, int | None]:
    """Who is on the other end, as the kernel says (SO_PEERCRED): for the logs of
    operator actions. A client cannot forge it; its own `_peer` key is replaced."""
    try:
        sock = stream.extra(SocketAttribute.raw_socket)
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
    except (OSError, anyio.TypedAttributeLookupError, struct.error):
        return {"uid": None, "pid": None, "gid": None}
    return {"uid": uid, "pid": pid, "gid": gid}


async def _answer(
    stream: SocketStream, handlers: dict[str, Handler], peer: dict[str, int | None] | None = None
) -> dict[str, Any]:
    buf = b""
    try:
        with anyio.fail_after(REQUEST_TIMEOUT):
            while b"\n" not in buf:
                chunk = await stream.receive(65536)
                buf += chunk
                if len(buf) > MAX_REQUEST:
                    return {"ok": False, "error": "request too large"}
    except anyio.EndOfStream:
        pass
    except (TimeoutError, anyio.BrokenResourceError, OSError):
        return {"ok": False, "error": "request not received in time"}
    line = buf.split(b"\n", 1)[0]
    try:
        request = json.loads(line)
    except RecursionError:  # `[[[[...` a megabyte deep: the decoder gives up, we answer
        return {"ok": False, "error": "request is nested too deeply"}
    except ValueError:  # not JSON, not UTF-8
        return {"ok": False, "error": "request is not a JSON object on one line"}
    if not isinstance(request, dict) or not isinstance(request.get("op"), str):
        return {"ok": False, "error": 'request must be an object with an "op" string'}
    request["_peer"] = peer or {}
    handler = handlers.get(request["op"])
    if handler is None:
        known = ", ".join(sorted(handlers))
        return {"ok": False, "error": f"unknown op {request['op']!r} (known: {known})"}
    try:
        return {"ok": True, "result": await handler(request)}
    except ControlError as exc:
        return {"ok": False, "error": str(exc)}
    except Exception as exc:  # a bug answers this request; it never ends the daemon
        return {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"[:500]}


def call(path: Path, request: dict[str, Any], timeout: float = 30.0) -> Any:
    """Client side (blocking): send one request, return `result` or raise ControlError."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(os.fsencode(path))  # bytes: any name the file system allows
        except FileNotFoundError:
            raise ControlError(f"no control socket at {path}: is factoryd running?") from None
        except ConnectionRefusedError:
            raise ControlError(f"control socket {path} refused the connection") from None
        except PermissionError:
            raise ControlError(
                f"permission denied on {path} (it is 0600: run as the daemon's user)"
            ) from None
        chunks = []
        try:
            sock.sendall(json.dumps(request).encode() + b"\n")
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, BrokenPipeError):
            raise ControlError(
                f"{path} hung up without an answer: is it factoryd's socket?"
            ) from None
        except TimeoutError:
            raise ControlError(f"{path} did not answer within {timeout:g}s") from None
    try:
        reply = json.loads(b"".join(chunks))
    except (ValueError, RecursionError):
        reply = None
    if not isinstance(reply, dict):
        raise ControlError(f"{path} sent an unreadable answer: is it factoryd's socket?")
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "unknown error"))[:2000])
    return reply.get("result")
