"""Hosts made of Linux network namespaces, each with its own link and hostname.

A :class:`Host` is a network namespace joined to this machine's root namespace by a
virtual ethernet pair on a private /24 of ``10.231.0.0/16`` that this module creates
(``.1`` on the root side, where the test's Postgres listens; ``.2`` inside the
namespace). Processes started with :meth:`Host.command` run inside the namespace and,
through ``unshare --uts``, under the host's own hostname, so pynenc records a
different host for each. Traffic goes only to addresses on these links.

Every namespace and link carries the creating process's id in its name, so a later run
can remove what a crashed run left behind (:func:`remove_stale`) without touching the
namespaces of a run that is still alive.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass

NAMESPACE_PREFIX = "pynenc-mh-"
# Interface names are limited to 15 bytes: "pmh" + pid (at most 7 digits) + label + "p".
LINK_PREFIX = "pmh"
# The private range the links are numbered from; nothing else on this machine uses it.
ADDRESS_RANGE = ipaddress.IPv4Network("10.231.0.0/16")

_NAMESPACE_NAME = re.compile(rf"^{re.escape(NAMESPACE_PREFIX)}(\d+)-([a-z])$")
_LINK_NAME = re.compile(rf"^{LINK_PREFIX}(\d+)([a-z])p?$")


class NamespacesUnavailable(Exception):
    """This machine (or this user) cannot create network namespaces; the message says why."""


@dataclass(frozen=True)
class Host:
    """One simulated host: a network namespace, its link and its hostname."""

    label: str
    namespace: str
    hostname: str
    link: str
    subnet: ipaddress.IPv4Network

    @property
    def server_address(self) -> str:
        """The root side of the link, where services of the test listen."""
        return str(self.subnet.network_address + 1)

    @property
    def address(self) -> str:
        """The host's own address, inside its namespace."""
        return str(self.subnet.network_address + 2)

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace under the host's hostname (same pid: exec)."""
        script = 'hostname "$0" && exec "$@"'
        return [
            "ip", "netns", "exec", self.namespace,
            "unshare", "--uts", "sh", "-c", script, self.hostname, *argv,
        ]  # fmt: skip

    def pids(self) -> list[int]:
        """Every process in the namespace (the runner, its workers, pynenc's manager)."""
        return namespace_pids(self.namespace)

    def kill_all(self, sig: signal.Signals = signal.SIGKILL, timeout: float = 30.0) -> list[int]:
        """Send ``sig`` to every process in the namespace until none is left.

        Processes may start while the first ones die (a runner replacing a worker), so
        the namespace is listed again until it is empty. Returns every pid signalled.

        :raises AssertionError: processes still there after ``timeout`` seconds.
        """
        return kill_namespace(self.namespace, sig, timeout)


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {result.stderr.strip()}")
    return result


def namespace_pids(namespace: str) -> list[int]:
    result = _ip("netns", "pids", namespace, check=False)
    return [int(line) for line in result.stdout.split()]


def kill_namespace(namespace: str, sig: signal.Signals, timeout: float) -> list[int]:
    signalled: list[int] = []
    deadline = time.monotonic() + timeout
    while pids := namespace_pids(namespace):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                continue
            if pid not in signalled:
                signalled.append(pid)
        assert time.monotonic() < deadline, (
            f"processes {pids} of namespace {namespace} still alive {timeout} s after {sig.name}"
        )
        time.sleep(0.05)
    return signalled


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    result = _ip("netns", "list", check=False)
    return [line.split()[0] for line in result.stdout.splitlines() if line.strip()]


def _links() -> list[str]:
    result = _ip("-j", "link", "show", check=False)
    return [str(link["ifname"]) for link in json.loads(result.stdout or "[]")]


def remove_namespace(namespace: str) -> None:
    """Kill what runs in ``namespace`` and delete it (its end of the link goes with it)."""
    kill_namespace(namespace, signal.SIGKILL, timeout=30)
    _ip("netns", "delete", namespace, check=False)


def remove_stale() -> list[str]:
    """Remove the namespaces and links of runs whose process is gone; return their names."""
    removed: list[str] = []
    for namespace in _namespaces():
        match = _NAMESPACE_NAME.match(namespace)
        if match and not _alive(int(match.group(1))):
            remove_namespace(namespace)
            removed.append(namespace)
    for link in _links():
        match = _LINK_NAME.match(link)
        if match and not _alive(int(match.group(1))):
            _ip("link", "delete", link, check=False)
            removed.append(link)
    return removed


def _networks_in_use() -> list[ipaddress.IPv4Network]:
    used: list[ipaddress.IPv4Network] = []
    for route in json.loads(_ip("-j", "-4", "route", "show", "table", "all").stdout or "[]"):
        if route.get("dst") not in (None, "default"):
            used.append(ipaddress.IPv4Network(route["dst"], strict=False))
    for link in json.loads(_ip("-j", "-4", "addr", "show").stdout or "[]"):
        for info in link.get("addr_info", []):
            used.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    return used


def _free_subnets(count: int) -> list[ipaddress.IPv4Network]:
    """``count`` /24s of :data:`ADDRESS_RANGE` that no route or address overlaps.

    The scan starts at an offset taken from the process id, so two runs at once pick
    different subnets.
    """
    candidates = list(ADDRESS_RANGE.subnets(new_prefix=24))
    start = (os.getpid() * count) % len(candidates)
    used = _networks_in_use()
    free: list[ipaddress.IPv4Network] = []
    for candidate in candidates[start:] + candidates[:start]:
        if not any(candidate.overlaps(network) for network in used):
            free.append(candidate)
            if len(free) == count:
                return free
    raise NamespacesUnavailable(f"no free /24 left in {ADDRESS_RANGE} for the test links")


def check_available() -> None:
    """Raise :class:`NamespacesUnavailable` naming the first missing requirement."""
    if os.geteuid() != 0:
        raise NamespacesUnavailable("creating network namespaces needs root; run as root")
    for tool in ("ip", "unshare"):
        if shutil.which(tool) is None:
            raise NamespacesUnavailable(
                f"`{tool}` is not installed (Debian: apt-get install iproute2 util-linux)"
            )


def _create(label: str, hostname: str, subnet: ipaddress.IPv4Network) -> Host:
    pid = os.getpid()
    host = Host(
        label=label,
        namespace=f"{NAMESPACE_PREFIX}{pid}-{label}",
        hostname=hostname,
        link=f"{LINK_PREFIX}{pid}{label}",
        subnet=subnet,
    )
    peer = f"{host.link}p"
    prefix = subnet.prefixlen
    try:
        _ip("netns", "add", host.namespace)
    except RuntimeError as exc:
        raise NamespacesUnavailable(f"cannot create a network namespace: {exc}") from exc
    try:
        _ip("link", "add", host.link, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", host.namespace)
        _ip("-n", host.namespace, "link", "set", peer, "name", "eth0")
        _ip("addr", "add", f"{host.server_address}/{prefix}", "dev", host.link)
        _ip("-n", host.namespace, "addr", "add", f"{host.address}/{prefix}", "dev", "eth0")
        _ip("link", "set", host.link, "up")
        _ip("-n", host.namespace, "link", "set", "eth0", "up")
        _ip("-n", host.namespace, "link", "set", "lo", "up")
        probe = subprocess.run(
            host.command(["hostname"]), capture_output=True, text=True, check=False
        )
        if probe.returncode != 0 or probe.stdout.strip() != hostname:
            raise NamespacesUnavailable(
                f"`unshare --uts` cannot give a process its own hostname here: "
                f"{probe.stderr.strip() or probe.stdout.strip()}"
            )
    except BaseException:
        destroy([host])
        raise
    return host


def create_hosts(hostnames: dict[str, str]) -> list[Host]:
    """One host per ``label: hostname``, after removing what crashed runs left.

    :raises NamespacesUnavailable: the machine or the user cannot create them.
    """
    check_available()
    remove_stale()
    subnets = _free_subnets(len(hostnames))
    hosts: list[Host] = []
    try:
        for (label, hostname), subnet in zip(hostnames.items(), subnets, strict=True):
            hosts.append(_create(label, hostname, subnet))
    except BaseException:
        destroy(hosts)
        raise
    return hosts


def destroy(hosts: Iterable[Host]) -> None:
    """Kill every process of the hosts, delete their namespaces and links (idempotent)."""
    for host in hosts:
        remove_namespace(host.namespace)
        if host.link in _links():
            _ip("link", "delete", host.link, check=False)
