"""A fleet host behind a link the test can cut: a network namespace joined by a veth pair.

The storage-level partition test cuts `lo` inside a namespace and relays to
the server's Unix socket. A whole daemon needs the real shape of a build
host: its own network namespace, a veth pair to the machine that runs
PostgreSQL, and the server listening on TCP on the host end of that pair.
`ip link set HOST_END down` is the partition: the namespace end loses its
carrier and the packets vanish without an error (no RST, no ICMP), which
is what a pulled cable or a dead switch does to a daemon.

* `Link`: the namespace and the veth pair (addresses from the test's pid,
  so parallel suites on one machine do not collide), `cut` / `mend`, and
  `argv` to run a command inside;
* `listen_on_link`: a throwaway server also listens on the host end and
  lets the namespace in over TCP with the password;
* `NetnsHost`: a `fleet_host_kit.Host` whose daemon runs inside the
  namespace (its control socket is a path, so the CLI still reaches it).
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from dataclasses import dataclass

from daemon_kit import ROOT
from fleet_host_kit import DSN_ENV, PY, Host
from pg_kit import PASSWORD, PgServer
from psycopg.conninfo import make_conninfo


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


class Link:
    """A network namespace and a veth pair to it (/30 in 10/8 from the pid)."""

    def __init__(self, tag: str = "") -> None:
        pid = os.getpid()
        self.ns = f"fleetns{pid}{tag}"
        self.host_end = f"fpv{pid % 10**7}h{tag}"[:15]
        self.ns_end = f"fpv{pid % 10**7}n{tag}"[:15]
        base = int(ipaddress.IPv4Address("10.0.0.0")) + ((pid % (1 << 22)) << 2)
        self.host_ip = str(ipaddress.IPv4Address(base + 1))
        self.ns_ip = str(ipaddress.IPv4Address(base + 2))

    def open(self) -> Link:
        _ip("netns", "add", self.ns)
        try:
            _ip("link", "add", self.host_end, "type", "veth", "peer", "name", self.ns_end)
            _ip("link", "set", self.ns_end, "netns", self.ns)
            _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_end)
            _ip("link", "set", self.host_end, "up")
            _ip("-n", self.ns, "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_end)
            _ip("-n", self.ns, "link", "set", self.ns_end, "up")
            _ip("-n", self.ns, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def cut(self) -> None:
        _ip("link", "set", self.host_end, "down")

    def mend(self) -> None:
        _ip("link", "set", self.host_end, "up")

    def argv(self, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *cmd]

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_end], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", self.ns], check=False, capture_output=True)

    def __enter__(self) -> Link:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


def listen_on_link(pg: PgServer, link: Link) -> None:
    """Make `pg` listen on the link's host end too, password-checked for the namespace."""
    with (pg.data / "postgresql.conf").open("a") as conf:
        conf.write(f"listen_addresses = '127.0.0.1,{link.host_ip}'\n")
    with (pg.data / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {link.ns_ip}/32 scram-sha-256\n")
    pg.stop()
    pg.start()


def tcp_dsn(dsn: str, pg: PgServer, link: Link) -> str:
    """`dsn` (one test's schema) reached over TCP through the link, with the password."""
    return make_conninfo(dsn, host=link.host_ip, port=str(pg.port), password=PASSWORD)


@dataclass
class NetnsHost(Host):
    """A daemon run inside `link`'s namespace (`ip netns exec` execs it: same pid)."""

    link: Link | None = None

    def start(self) -> None:
        assert self.link is not None
        self.write()
        env = {**os.environ, DSN_ENV: self.dsn}
        argv = [PY, "-m", "factoryd", "run", "--config", str(self.config), "--log-format", "json"]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.link.argv(*argv),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env=env,
            )
