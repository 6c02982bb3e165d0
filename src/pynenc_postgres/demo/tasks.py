"""The demo's sample pynenc app.

It lives in an importable module, not in a script, because runner workers are other
processes: a spawned worker imports this module by name and builds ``app`` from the
``PYNENC__*`` environment variables that :func:`pynenc_postgres.demo.run_demo` exports.
"""

from __future__ import annotations

from pynenc import Pynenc

app = Pynenc()

PRICES_CENTS = {"tea": 450, "mug": 1200, "biscuits": 325}
EXCHANGE_RATES = {"EUR": 1.0, "USD": 1.08, "GBP": 0.85}


@app.task
def add(x: int, y: int) -> int:
    """Succeeds."""
    return x + y


@app.task
def validate_order(order_id: int, items: int) -> str:
    """Fails for an order without items, so the report has an exception to show."""
    if items <= 0:
        raise ValueError(f"order {order_id} has no items")
    return f"order {order_id}: {items} items"


@app.task(max_retries=2, retry_for=(ConnectionError,))
def fetch_exchange_rate(currency: str) -> float:
    """Fails once with a retriable error, then succeeds on its retry."""
    if fetch_exchange_rate.invocation.num_retries == 0:
        raise ConnectionError("exchange-rate service timed out (first attempt fails on purpose)")
    return EXCHANGE_RATES[currency]


@app.task
def price_line(sku: str, quantity: int) -> int:
    """A sub-task of :func:`checkout`: the price of one order line, in cents."""
    return PRICES_CENTS[sku] * quantity


@app.task
def checkout(order_id: int, lines: dict[str, int]) -> int:
    """A small workflow: prices every line in parallel sub-tasks, then adds them up."""
    priced = price_line.parallelize(list(lines.items()))
    return sum(priced.results)
