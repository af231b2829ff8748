"""A local cluster whose hosts are Linux network namespaces, so links between them can be cut.

On one machine every process talks over 127.0.0.1, where nothing can be partitioned. Here
each host of the cluster (the master with its Celery processes, each tablet server with
its link, each client server, Redis) gets a network namespace with its own address on a
private bridge, like machines on one switch; the caller (a test, the fault harness) stays
in the root namespace and reaches every host through the bridge.

A partition is a pair of blackhole routes (``ip route add blackhole``), one in each
host: packets between the two are dropped silently, as on a cut cable, not refused, so
connections hang until their timeouts, which is what a real partition does to them.

Needs root and iproute2 (``ip``); ``netns_available`` says whether this machine can.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass, field

from distdb.cluster.errors import ClusterError

SUBNET_BASE = "10.213"  # 10.213.<n>.0/24 per cluster: private, unlikely to be in use here


def netns_available() -> str | None:
    """None if network namespaces can be made here, else why not (for a skip message)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2 (the ip command) is not installed"
    probe = f"ddprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except ClusterError as exc:
        return f"cannot create a network namespace: {exc}"
    _ip("netns", "del", probe, check=False)
    return None


def _ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(("ip", *args), capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise ClusterError(f"ip {' '.join(args)}: {done.stderr.strip() or done.returncode}")
    return done.stdout


@dataclass
class Network:
    """Hosts on a bridge, each in its own namespace. ``name`` (a few letters) prefixes every
    interface and namespace; ``subnet`` (1-254) picks the cluster's /24."""

    name: str
    subnet: int
    hosts: list[str]
    _cuts: set[frozenset[str]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def for_port(cls, port: int, hosts: list[str]) -> Network:
        """A network named after a port the cluster owns, so two clusters never clash."""
        return cls(name=f"dd{port:x}", subnet=port % 254 + 1, hosts=hosts)

    @property
    def bridge(self) -> str:
        return f"{self.name}br"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge (where tests and the harness are)."""
        return f"{SUBNET_BASE}.{self.subnet}.1"

    def address(self, host: str) -> str:
        return f"{SUBNET_BASE}.{self.subnet}.{self.hosts.index(host) + 2}"

    def namespace(self, host: str) -> str:
        return f"{self.name}-{host}"

    def create(self) -> None:
        """The bridge and every host, from scratch (left-overs of a crashed run removed)."""
        self.destroy()
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, host in enumerate(self.hosts):
            ns, outside, inside = self.namespace(host), f"{self.name}{i}o", f"{self.name}{i}i"
            _ip("netns", "add", ns)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", ns)
            _ip("link", "set", outside, "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{self.address(host)}/24", "dev", inside)
            _ip("-n", ns, "link", "set", inside, "up")
            _ip("-n", ns, "link", "set", "lo", "up")

    def destroy(self) -> None:
        """Remove every namespace and the bridge (their veth pairs go with them)."""
        for host in self.hosts:
            _ip("netns", "del", self.namespace(host), check=False)
        _ip("link", "del", self.bridge, check=False)
        self._cuts.clear()

    # --- partitions -------------------------------------------------------------------------------

    def cut(self, a: str, b: str) -> None:
        """Drop every packet between hosts ``a`` and ``b`` (both ways)."""
        with self._lock:
            if frozenset((a, b)) in self._cuts or a == b:
                return
            self._route("add", a, b)
            self._route("add", b, a)
            self._cuts.add(frozenset((a, b)))

    def partition(self, side: list[str]) -> None:
        """Cut ``side`` off from every other host (each side still talks within itself)."""
        others = [h for h in self.hosts if h not in side]
        for a, b in itertools.product(side, others):
            self.cut(a, b)

    def heal(self) -> None:
        """Undo every cut."""
        with self._lock:
            for pair in list(self._cuts):
                a, b = sorted(pair)
                self._route("del", a, b, check=False)
                self._route("del", b, a, check=False)
            self._cuts.clear()

    @property
    def cuts(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(tuple(sorted(pair)) for pair in self._cuts)  # type: ignore[misc]

    def _route(self, action: str, at: str, to: str, check: bool = True) -> None:
        _ip("-n", self.namespace(at), "route", action, "blackhole", self.address(to), check=check)
