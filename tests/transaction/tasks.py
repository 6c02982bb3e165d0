"""Tasks of the ``in_transaction()`` tests.

The runner process builds ``app`` from ``PYNENC__*`` variables; the tests bind the tasks
to apps of their own. Every run of a task body adds one row to ``task_run`` through the
runner's own connection, so how many times each invocation ran is a count.
"""

from __future__ import annotations

import os

import psycopg
from pynenc import Pynenc
from pynenc.conf.config_task import ConcurrencyControlType

app = Pynenc()


def _record(order_id: int, invocation_id: str) -> None:
    with psycopg.connect(os.environ["PYNENC__POSTGRES_URL"]) as conn:
        conn.execute(
            "INSERT INTO task_run (order_id, invocation_id) VALUES (%s, %s)",
            (order_id, invocation_id),
        )


@app.task  # type: ignore[untyped-decorator]  # pynenc ships no type information
def send_invoice(order_id: int) -> str:
    """The job that must exist exactly when the order does."""
    _record(order_id, send_invoice.invocation.invocation_id)
    return f"invoice-{order_id}"


@app.task  # type: ignore[untyped-decorator]
def attach_document(order_id: int, document: str) -> int:
    """A large argument: pynenc keeps it in the client data store."""
    _record(order_id, attach_document.invocation.invocation_id)
    return len(document)


@app.task(registration_concurrency=ConcurrencyControlType.ARGUMENTS)  # type: ignore[untyped-decorator]
def reserve_stock(order_id: int) -> str:
    """Registration concurrency: the orchestrator looks up and indexes its arguments."""
    _record(order_id, reserve_stock.invocation.invocation_id)
    return f"reserved-{order_id}"


ALL_TASKS = (send_invoice, attach_document, reserve_stock)
