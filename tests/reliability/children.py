"""Code that runs in a spawned child process.

Nothing here imports ``pynenc_postgres``: the child must find the state backend class
by name, through the ``pynenc.plugins`` entry point, from environment variables alone.
"""

from __future__ import annotations

import sys
from typing import Any


def rebuild_from_environment(invocation_id: str, results: Any, release: Any) -> None:
    """Build ``Pynenc()`` from ``PYNENC__*`` variables, read the parent's row, write one.

    The child then keeps its session open until ``release`` is set (or a minute has
    passed), so that the parent can look at it in ``pg_stat_activity``.
    """
    try:
        imported_before = "pynenc_postgres" in sys.modules
        from pynenc import Pynenc

        app = Pynenc()
        backend = app.state_backend
        invocation = backend.get_invocation(invocation_id)
        backend.set_result(invocation_id, {"from": "spawned child"})

        def op(conn: Any) -> Any:
            return conn.execute("SELECT pg_backend_pid()").fetchone()[0]

        results.put(
            {
                "imported_before": imported_before,
                "backend_cls": f"{type(backend).__module__}.{type(backend).__name__}",
                "app_id": app.app_id,
                "value": invocation.call.arguments.kwargs["value"],
                "backend_pid": backend.db.run(op),
            }
        )
        release.wait(60)
    except BaseException as exc:
        results.put({"error": repr(exc)})
        raise
