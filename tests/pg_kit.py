"""A throwaway PostgreSQL for the fleet tests: initdb + pg_ctl in a temp dir.

One server per test session (started on first use, stopped and removed at
interpreter exit); each test gets its own database from `fresh_db`. The
server listens on a Unix socket in its own directory and on a loopback TCP
port the kernel chose, with `trust` on the socket and a password
(scram-sha-256) on TCP, so tests can exercise both ways in.

PostgreSQL refuses to run as root: as root, initdb, pg_ctl and postgres run
as Debian's `postgres` system user through `runuser`, and the directory is
chowned to it. Debian keeps the server binaries in
/usr/lib/postgresql/VERSION/bin, off PATH; they are found there first.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

SUPERUSER = "fleet_admin"
PASSWORD = "s3cret-fleet-pw"
TEST_DB = "fleet"


def _pg_bin(name: str) -> str:
    found = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install Debian's postgresql package")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="factoryd-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._as_root = os.getuid() == 0
        self._counter = itertools.count(1)
        self._lock = threading.Lock()
        if self._as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.root.chmod(0o700)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_root:
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        self._run(
            _pg_bin("initdb"),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        pwfile.unlink()
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\n"
                "fsync = off\nfull_page_writes = off\nmax_connections = 200\n"
                "shared_buffers = 32MB\n"
            )
        self.start()
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {TEST_DB}".encode())

    def _run(self, *argv: str) -> None:
        cmd = ["runuser", "-u", "postgres", "--", *argv] if self._as_root else list(argv)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self) -> None:
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "immediate") -> None:
        """Stop (immediate = as if it crashed: WAL recovery on start) and start again."""
        self.stop(mode)
        self.start()

    def url(self, dbname: str = "postgres", *, tcp: bool = False) -> str:
        if tcp:
            return f"postgresql://{SUPERUSER}:{PASSWORD}@127.0.0.1:{self.port}/{dbname}"
        return f"host={self.root} port={self.port} user={SUPERUSER} dbname={dbname}"

    def fresh_db(self) -> str:
        """A new empty schema in the shared test database; returns a connection
        string whose search_path is that schema (a schema costs far less than a
        database, and isolates just as well: every fleet name is unqualified)."""
        with self._lock:
            name = f"t{os.getpid()}_{next(self._counter)}"
            with psycopg.connect(self.url(TEST_DB), autocommit=True) as conn:
                conn.execute(f"CREATE SCHEMA {name}".encode())
        return make_conninfo(self.url(TEST_DB), options=f"-csearch_path={name}")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


_server: PgServer | None = None


def shared_server() -> PgServer:
    """The session's server, started on first use and removed at exit."""
    global _server
    if _server is None:
        _server = PgServer()
        atexit.register(_server.destroy)
    return _server


def with_db_clock(dsn: str, offset: float) -> str:
    """`dsn` whose sessions see `fleet_now()` moved by `offset` seconds."""
    options = conninfo_to_dict(dsn).get("options") or ""
    kept = " ".join(o for o in str(options).split() if "factoryd.clock_offset" not in o)
    return make_conninfo(dsn, options=f"{kept} -cfactoryd.clock_offset={float(offset)}".strip())
