"""The simulated hosts themselves: own hostname, own link to Postgres, clean removal.

The multi-host tests are only as good as this harness: each process must really run
under its host's name and reach the database through that host's link, a kill must
leave nothing running, and what a crashed run left behind must go.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

from tests.multihost import netns
from tests.multihost.conftest import REPO, Cluster, wait_until
from tests.multihost.netns import Host

PROBE = """
import os, socket, psycopg
with psycopg.connect(os.environ["PYNENC__POSTGRES_URL"]) as conn:
    client, server = conn.execute("SELECT inet_client_addr(), inet_server_addr()").fetchone()
print(socket.gethostname(), client, server)
"""


def test_each_host_has_its_hostname_and_reaches_postgres_over_its_own_link(
    cluster: Cluster,
) -> None:
    seen = []
    for host in cluster.hosts:
        probe = subprocess.run(
            host.command([sys.executable, "-c", PROBE]),
            cwd=REPO,
            env=cluster.env(host),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert probe.returncode == 0, probe.stderr
        seen.append(tuple(probe.stdout.split()))
    assert seen == [(h.hostname, h.address, h.server_address) for h in cluster.hosts]
    assert socket.gethostname() not in {h.hostname for h in cluster.hosts}


def test_killing_a_host_leaves_no_process_in_it(hosts: list[Host]) -> None:
    host = hosts[-1]
    # A parent with a child of its own, as a runner with its workers.
    process = subprocess.Popen(host.command(["sh", "-c", "sleep 300 & sleep 300"]))
    try:
        wait_until(lambda: len(host.pids()) >= 3, 30, lambda: f"processes: {host.pids()}", 0.05)
        running = host.pids()
        killed = host.kill_all(signal.SIGKILL)
        assert set(running) <= set(killed)
        assert host.pids() == []
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        host.kill_all(signal.SIGKILL)


def test_what_a_crashed_run_left_is_removed_and_live_hosts_are_kept(hosts: list[Host]) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    namespace = f"{netns.NAMESPACE_PREFIX}{gone.pid}-z"
    link = f"{netns.LINK_PREFIX}{gone.pid}z"
    subprocess.run(["ip", "netns", "add", namespace], check=True)
    subprocess.run(
        ["ip", "link", "add", link, "type", "veth", "peer", "name", f"{link}p"], check=True
    )
    try:
        removed = netns.remove_stale()
        assert namespace in removed
        assert link in removed
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert namespace not in listed
        assert link not in links
        for host in hosts:
            assert host.namespace in listed
            assert host.link in links
    finally:
        subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, check=False)
        subprocess.run(["ip", "link", "delete", link], capture_output=True, check=False)
