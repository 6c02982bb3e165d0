"""One of the processes of the auto-migrate race (tests/migrations/test_auto_migrate.py).

A fresh interpreter imports ``main(url)`` (a task cannot live in ``__main__``), which
builds a pynenc app with auto-migrate on, prints ``ready``, and waits for a line on
stdin, so that every process reaches its first connect at the same moment. It then
stores an invocation through the backend, reads it back and prints one JSON line.
Alembic's "Running upgrade" lines go to stderr, tagged with the pid.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from pynenc import Pynenc, PynencBuilder
from pynenc.arguments import Arguments
from pynenc.call import Call
from pynenc.invocation import DistributedInvocation

# Tasks are looked up by module and name when an invocation is read back; the app that
# runs them is set by whoever uses this module.
_placeholder = Pynenc()


@_placeholder.task
def add(x: int, y: int) -> int:
    return x + y


def arguments() -> Arguments:
    return Arguments({"x": 1, "y": 2})


def main(url: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"pid={os.getpid()} %(name)s %(message)s"))
    migration_log = logging.getLogger("alembic.runtime.migration")
    migration_log.addHandler(handler)
    migration_log.setLevel(logging.INFO)

    app = (
        PynencBuilder()
        .app_id("race")
        .memory()
        .postgres_state_backend(url=url, auto_migrate=True)
        .build()
    )
    add.app = app
    # Nothing above has connected: the app's first call to the backend comes after the gate.
    print("ready", flush=True)
    sys.stdin.readline()

    # Creating an invocation stores it (and the app info) through the state backend.
    invocation: DistributedInvocation = DistributedInvocation.isolated(Call(add, arguments()))
    app.state_backend.upsert_invocations([invocation])
    stored = app.state_backend.get_invocation(invocation.invocation_id)
    print(
        json.dumps(
            {
                "pid": os.getpid(),
                "invocation_id": str(invocation.invocation_id),
                "read_back": stored == invocation,
            }
        ),
        flush=True,
    )
