"""A TCP proxy in front of the test PostgreSQL that can go silent, like a partition.

`freeze()` stops forwarding bytes both ways and holds new connections
unanswered: the daemon's database calls then block (the kernel still
acknowledges what is sent, so nothing fails fast; exactly the case where
a call on the event loop would freeze the host). `thaw()` forwards again.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time


class FreezingProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._frozen = threading.Event()
        self._closed = threading.Event()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def freeze(self) -> None:
        self._frozen.set()

    def thaw(self) -> None:
        self._frozen.clear()

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._socks.append(client)
            self._spawn(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        while self._frozen.is_set() and not self._closed.is_set():
            time.sleep(0.02)  # held: the client's connect waits
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        with self._lock:
            self._socks.append(server)
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, server)
        sel.register(server, selectors.EVENT_READ, client)
        try:
            while not self._closed.is_set():
                if self._frozen.is_set():
                    time.sleep(0.02)
                    continue
                for key, _ in sel.select(0.05):
                    src: socket.socket = key.fileobj  # type: ignore[assignment]
                    data = src.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
        except OSError:
            return
        finally:
            sel.close()
            client.close()
            server.close()

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        with self._lock:
            for sock in self._socks:
                with contextlib.suppress(OSError):
                    sock.close()
        for thread in self._threads:
            thread.join(timeout=2)
