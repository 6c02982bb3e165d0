"""The demo's runner processes: started the way a deployment starts them, always stopped.

Each worker is ``python -m pynenc --app pynenc_postgres.demo.tasks runner start``,
pynenc's own runner command, configured by ``PYNENC__*`` environment variables alone,
as a worker on another host would be. It runs in a session of its own, so that the
worker processes that pynenc's ``PersistentProcessRunner`` spawns share its process
group and can be stopped with it, and so that a Ctrl-C in the terminal reaches the
demo, which then stops the workers in order instead of each process dying on its own.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

APP_MODULE = "pynenc_postgres.demo.tasks"
# pynenc's runner loop stops its worker processes on SIGTERM, waiting up to 5 s for each.
STOP_GRACE_SEC = 20.0
# After SIGKILL, how long to wait for the kernel to remove the group's processes.
KILL_WAIT_SEC = 5.0
PR_SET_PDEATHSIG = 1


def worker_command(python: str | None = None) -> list[str]:
    """pynenc's runner command for the demo app (``pynenc --app ... runner start``)."""
    return [python or sys.executable, "-m", "pynenc", "--app", APP_MODULE, "runner", "start"]


@dataclass
class WorkerProcess:
    """One runner process started by the demo, and the file its output goes to."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


def _parent_death_signal() -> Callable[[], None] | None:
    """Linux only: a pre-exec hook that makes a worker get SIGTERM when the demo dies.

    Without it a demo killed with SIGKILL (no handler runs) would leave its workers
    running. The C function is looked up here, before any fork, so the hook that runs
    in the child between fork and exec only makes one system call.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    term = int(signal.SIGTERM)

    def set_parent_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, term)

    return set_parent_death_signal


def start_worker(name: str, environment: dict[str, str], log_path: Path) -> WorkerProcess:
    """Start one runner process with exactly the given ``PYNENC__*`` configuration."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYNENC__")}
    env.update(environment)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            worker_command(),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_parent_death_signal(),
        )
    return WorkerProcess(name, process, log_path)


@contextmanager
def running_workers(
    count: int, environment: dict[str, str], log_dir: Path
) -> Iterator[list[WorkerProcess]]:
    """Start ``count`` runner processes, and stop every one of them on the way out.

    They are stopped however the block ends: normally, on an exception, on Ctrl-C, or
    on SIGTERM (which :func:`exit_on_sigterm` turns into an exception).
    """
    workers: list[WorkerProcess] = []
    try:
        for number in range(1, count + 1):
            name = f"worker-{number}"
            workers.append(start_worker(name, environment, log_dir / f"{name}.log"))
        yield workers
    finally:
        stop_workers(workers)


def stop_workers(workers: list[WorkerProcess], grace_sec: float = STOP_GRACE_SEC) -> None:
    """SIGTERM each runner, wait for it, then SIGKILL whatever is left of its group.

    SIGTERM lets pynenc's runner stop its worker processes and reroute what they were
    running. The process group catches any worker process that survived its runner.
    """
    with _signals_ignored():
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.terminate()
        deadline = time.monotonic() + grace_sec
        for worker in workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for worker in workers:
            _kill_group(worker.process)


def group_alive(pgid: int) -> bool:
    """True while any process of the process group ``pgid`` exists."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    # The worker was started as the leader of its own session, so its pid is the
    # group id of every process it spawned.
    pgid = process.pid
    if group_alive(pgid):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait()
    deadline = time.monotonic() + KILL_WAIT_SEC
    while group_alive(pgid) and time.monotonic() < deadline:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            break
        time.sleep(0.05)


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """A second Ctrl-C (or a SIGTERM) while stopping would leave workers behind."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def exit_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit``, so ``finally`` blocks stop the workers.

    Python's default action for SIGTERM ends the process without running them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
