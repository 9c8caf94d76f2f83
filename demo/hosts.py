"""Hosts on one machine: Linux network namespaces joined to this one by veth pairs.

The scaled installation's test and benchmark run each worker on a host of its own: a network
namespace with its own loopback and one address on a private /30 shared with this machine (the
root namespace), e.g. 10.231.7.2 here and 10.231.7.1 on this machine's side. A process there
reaches the Prefect server and PostgreSQL by this machine's side of its link, never 127.0.0.1
(its own loopback has nothing on it). The services listen on 127.0.0.1 only; a forwarder, the
stand-in for the reverse proxy a real installation puts in front of them, listens on this
machine's side of each link and passes every connection on to 127.0.0.1.

Needs root and iproute2's `ip`. `Hosts.close()` removes what it made; a namespace left behind by
a process that was killed is removed by the next `Hosts.open()` (its name carries the dead pid).
Traffic stays on this machine: loopback and the links' own addresses, nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "remedy-host"  # namespaces are named remedy-host-<owner pid>-<n>
NETWORK = "10.231.0.0/16"  # a /24 of it per run, a /30 per host


class HostsError(RuntimeError):
    """A namespace, a link or the forwarder could not be set up."""


def unavailable() -> str | None:
    """Say why hosts cannot be made here (not root, no `ip`), or None if they can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2's `ip`"
    return None


def _ip(*argv: str) -> str:
    proc = subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HostsError(f"ip {' '.join(argv)}: {proc.stderr.strip()}")
    return proc.stdout


@dataclass(frozen=True)
class Host:
    """One namespace: its name, its address, and this machine's address on the same link."""

    name: str
    number: int
    address: str  # inside the namespace
    gateway: str  # this machine's side of the link: where the host reaches our services
    link: str = ""  # this machine's end of the veth pair

    def argv(self, *command: str) -> list[str]:
        """Return the command line that runs `command` on this host."""
        return ["ip", "netns", "exec", self.name, *command]

    def pids(self) -> list[int]:
        """Return the processes running on this host."""
        try:
            out = _ip("netns", "pids", self.name)
        except HostsError:
            return []
        return [int(p) for p in out.split()]

    def flow_processes(self) -> list[int]:
        """Return the processes on this host that execute a flow run (not its worker, nor the
        worker's fork server: flows/prefork.py)."""
        from flows.prefork import is_flow_process

        return [pid for pid in self.pids() if is_flow_process(pid)]

    def kill(self, timeout: float = 10.0) -> int:
        """SIGKILL every process on this host, as a power cut would; return how many died."""
        killed: set[int] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.pids()
            if not pids:
                return len(killed)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            time.sleep(0.1)
        raise HostsError(f"processes on {self.name} survived SIGKILL for {timeout:.0f} s")


def _used_subnets() -> set[int]:
    """Return the third octets of 10.231.x.y already on this machine's interfaces or routes."""
    text = _ip("-4", "-o", "addr", "show") + _ip("-4", "route", "show")
    net = ipaddress.ip_network(NETWORK)
    used = set()
    for token in text.replace("/", " ").split():
        with contextlib.suppress(ValueError):
            addr = ipaddress.ip_address(token)
            if addr in net:
                used.add(int(addr) >> 8 & 0xFF)
    return used


def owner_alive(name: str) -> bool:
    """Tell whether the process a `remedy-host-<pid>-<n>` name carries is alive."""
    parts = name.split("-")
    try:
        os.kill(int(parts[2]), 0)
    except (IndexError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def remove_stale() -> list[str]:
    """Delete namespaces that a killed run of ours left behind; return their names."""
    removed = []
    for line in _ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith(PREFIX + "-") and not owner_alive(name):
            Host(name, 0, "", "").kill()
            with contextlib.suppress(HostsError):
                _ip("netns", "delete", name)
            removed.append(name)
    return removed


@dataclass
class Hosts:
    """Several hosts, each on its own /30 of one private /24 chosen free on this machine."""

    count: int
    hosts: list[Host] = field(default_factory=list)

    def open(self) -> Hosts:
        """Create the namespaces and their links; undo what was made if a step fails."""
        remove_stale()
        free = sorted(set(range(1, 255)) - _used_subnets())
        if not free:
            raise HostsError(f"no free /24 left in {NETWORK}")
        third = random.choice(free)  # noqa: S311 (not a secret: two runs should not collide)
        base = int(ipaddress.ip_network(NETWORK).network_address) + (third << 8)
        try:
            for n in range(self.count):
                self._make(n, base + 4 * n)
        except BaseException:
            self.close()
            raise
        return self

    def _make(self, n: int, block: int) -> Host:
        name = f"{PREFIX}-{os.getpid()}-{n}"
        gateway, address = (
            str(ipaddress.ip_address(block + 1)),
            str(ipaddress.ip_address(block + 2)),
        )
        outer, inner = f"rmd{os.getpid() % 100000}h{n}", f"rmd{os.getpid() % 100000}n{n}"
        _ip("netns", "add", name)
        host = Host(name, n, address, gateway, outer)
        self.hosts.append(host)  # from here on, close() removes it
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner, "netns", name)
        _ip("addr", "add", f"{gateway}/30", "dev", outer)
        _ip("link", "set", outer, "up")
        _ip("-n", name, "addr", "add", f"{address}/30", "dev", inner)
        _ip("-n", name, "link", "set", inner, "up")
        _ip("-n", name, "link", "set", "lo", "up")
        return host

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __getitem__(self, n: int) -> Host:
        return self.hosts[n]

    def close(self) -> None:
        """Kill what runs on the hosts and delete them (their links go with them)."""
        for host in self.hosts:
            with contextlib.suppress(HostsError):
                host.kill()
            if host.link:  # the namespace's end would take it along, but only in a while
                with contextlib.suppress(HostsError):
                    _ip("link", "delete", host.link)
            with contextlib.suppress(HostsError):
                _ip("netns", "delete", host.name)
        self.hosts.clear()

    def __enter__(self) -> Hosts:
        return self.open()

    def __exit__(self, *_exc: object) -> None:
        self.close()


# --- the forwarder ------------------------------------------------------------------------------


@dataclass
class Forwarder:
    """A child process passing TCP connections from the hosts' gateways to 127.0.0.1.

    One listener per gateway address and port; each accepted connection is joined to the same
    port on 127.0.0.1 (the Prefect server, PostgreSQL, the mail catcher, the chat receiver).
    """

    gateways: list[str]
    ports: list[int]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Forwarder:
        """Start the forwarder and wait until every listener accepts connections."""
        argv = [sys.executable, "-m", "demo.hosts", "forward"]
        argv += ["--listen", ",".join(self.gateways), "--ports", ",".join(map(str, self.ports))]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parent.parent,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise HostsError(
                    f"the forwarder exited with {self.process.returncode}; see {self.log}"
                )
            if all(_accepts(g, p) for g in self.gateways for p in self.ports):
                return self
            time.sleep(0.2)
        self.stop()
        raise HostsError(f"the forwarder was not listening after {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        """Stop the forwarder (open connections end with it)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


def _accepts(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((address, port)) == 0


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _join(port: int, client: asyncio.StreamReader, back: asyncio.StreamWriter) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        back.close()
        return
    await asyncio.gather(_pipe(client, writer), _pipe(reader, back))


async def _forward(listen: list[str], ports: list[int]) -> None:
    servers = []
    for address in listen:
        for port in ports:

            async def accept(
                r: asyncio.StreamReader, w: asyncio.StreamWriter, port: int = port
            ) -> None:
                await _join(port, r, w)

            servers.append(await asyncio.start_server(accept, address, port, reuse_address=True))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent = os.getppid()
    while not stop.is_set():  # a parent killed before it could stop us leaves no forwarder
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=2.0)
        if os.getppid() != parent:
            break
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> int:
    """`python -m demo.hosts forward --listen A,B --ports P,Q`: run the forwarder."""
    parser = argparse.ArgumentParser(prog="python -m demo.hosts")
    sub = parser.add_subparsers(dest="command", required=True)
    fwd = sub.add_parser("forward", help="pass connections on A:P, B:P ... to 127.0.0.1:P")
    fwd.add_argument("--listen", required=True, help="addresses of this machine, comma-separated")
    fwd.add_argument("--ports", required=True, help="ports, comma-separated")
    args = parser.parse_args(argv)
    listen = [a for a in args.listen.split(",") if a]
    for address in listen:  # never anything but the links' own addresses
        if ipaddress.ip_address(address) not in ipaddress.ip_network(NETWORK):
            parser.error(f"{address} is not in {NETWORK}")
    asyncio.run(_forward(listen, [int(p) for p in args.ports.split(",") if p]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
