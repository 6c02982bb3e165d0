"""A client that submits tasks inside its transaction, says so, and waits to be killed.

``python -m tests.transaction.killed_client URL APP_ID ORDER_ID`` prints one JSON line
(the invocation ids, the server process of its connection) while its transaction is
still open, then sleeps inside the block until the test kills it with SIGKILL.
"""

from __future__ import annotations

import json
import sys
import time

import psycopg

from pynenc_postgres import in_transaction
from tests.transaction.shop import bound, build_app, submit_order_tasks


def main(url: str, app_id: str, order_id: int) -> None:
    app = build_app(url, app_id)
    with bound(app), psycopg.connect(url) as conn:
        conn.execute("INSERT INTO shop_order VALUES (%s, 'killed before commit')", (order_id,))
        with in_transaction(conn):
            invocations = submit_order_tasks(order_id)
            report = {
                "invocation_ids": [invocation.invocation_id for invocation in invocations],
                "backend_pid": conn.info.backend_pid,
            }
            print(json.dumps(report), flush=True)
            time.sleep(3600)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
