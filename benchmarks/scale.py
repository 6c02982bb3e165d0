"""Scale benchmark: the interface's lookups at 1k and at 1M invocations, table sizes, memory.

1. A database holding one app with 1,000 invocations: every lookup is timed.
2. 999,000 more invocations (3 history rows and a result each) are seeded server-side
   with ``INSERT ... SELECT generate_series`` over 10 apps, tables are analyzed (as
   autovacuum would), and the same lookups are timed again on random invocations.
   Each must stay within 1.5 x its 1k latency, and its ``EXPLAIN`` must show an index
   scan; the plans are printed and written to the docs.
3. Table and index bytes per invocation, next to pynenc's SQLite file bytes.
4. RSS of a process that runs the workload for 100,000 invocations.

Run it with ``python -m benchmarks.scale`` (``make bench-scale``). It uses its own
database (``pynenc_bench_scale`` by default) on ``--postgres-url`` /
``$PYNENC_BENCH_POSTGRES_URL`` (else an embedded PostgreSQL) and drops it at the end.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
from pynenc import Pynenc, PynencBuilder

from benchmarks.common import (
    BASE,
    bench_database,
    bench_task,
    inv_id,
    machine_description,
    median,
    postgres_server,
    replace_section,
    seed,
)
from benchmarks.workload import OURS_OFF, SQLITE, PynencWorkload, build_app
from pynenc_postgres.db.engine import dispose_all
from pynenc_postgres.db.models import STATE_TABLES
from pynenc_postgres.state_backend.sql import statements

BIG_APPS = 10
SMALL_APP = "scale-small"
SMALL = 1_000
TOTAL = 1_000_000
CHILDREN = 10  # invocation i has parent i - i % CHILDREN (itself when it is a parent)

SAMPLES = 300
LIMIT = 1.5


def app_for(url: str, app_id: str) -> Pynenc:
    app: Pynenc = PynencBuilder().app_id(app_id).memory().postgres_state_backend(url=url).build()
    app.task(bench_task)
    app.logger.setLevel("WARNING")
    return app


# -- the measured operations ---------------------------------------------------------------

Op = Callable[[Pynenc, str, int], Any]


def op_get_invocation(app: Pynenc, name: str, i: int) -> Any:
    return app.state_backend.get_invocation(inv_id(name, i))


def op_get_history(app: Pynenc, name: str, i: int) -> Any:
    history = app.state_backend.get_history(inv_id(name, i))
    assert len(history) == 3
    return history


def op_get_result(app: Pynenc, name: str, i: int) -> Any:
    return app.state_backend.get_result(inv_id(name, i))


def op_get_child_invocations(app: Pynenc, name: str, i: int) -> Any:
    children = list(app.state_backend.get_child_invocations(inv_id(name, i - i % CHILDREN)))
    assert len(children) == CHILDREN - 1, len(children)
    return children


def op_history_window(app: Pynenc, name: str, i: int) -> Any:
    start = BASE + timedelta(seconds=i)
    batch = next(app.state_backend.iter_history_in_timerange(start, start + timedelta(minutes=1)))
    assert len(batch) == 100, len(batch)
    return batch


def op_matching_runner_contexts(app: Pynenc, name: str, i: int) -> Any:
    found = list(app.state_backend.get_matching_runner_contexts(f"-runner-{i % 10}"))
    return found


OPS: dict[str, Op] = {
    "get_invocation": op_get_invocation,
    "get_history": op_get_history,
    "get_result": op_get_result,
    "get_child_invocations": op_get_child_invocations,
    "iter_history_in_timerange (first batch, 1 min)": op_history_window,
    "get_matching_runner_contexts": op_matching_runner_contexts,
}

# The statement behind each operation, with parameters for EXPLAIN (app, i).
EXPLAINED: dict[str, Callable[[str, int], tuple[str, tuple[Any, ...]]]] = {}


def _explain_params() -> None:
    sql = statements("public")

    def window(app: str, i: int) -> tuple[str, tuple[Any, ...]]:
        start = BASE + timedelta(seconds=i)
        return sql.history_in_timerange_first, (app, start, start + timedelta(minutes=1), 100)

    EXPLAINED.update(
        {
            "get_invocation": lambda a, i: (sql.get_invocation, (a, inv_id(a, i))),
            "get_history": lambda a, i: (sql.get_history, (a, inv_id(a, i))),
            "get_result": lambda a, i: (sql.get_result, (a, inv_id(a, i))),
            "get_child_invocations": lambda a, i: (
                sql.child_invocations,
                (a, inv_id(a, i - i % CHILDREN)),
            ),
            "iter_history_in_timerange (first batch, 1 min)": window,
            "get_matching_runner_contexts": lambda a, i: (
                sql.match_runner_contexts,
                (a, f"%-runner-{i % 10}%", a),
            ),
            "purge: DELETE from the history table (largest of its statements)": lambda a, i: (
                sql.purge_app[0],
                (SMALL_APP,),
            ),
        }
    )


_explain_params()


def time_ops(apps: dict[str, Pynenc], per_app: dict[str, int]) -> dict[str, float]:
    """Median µs of each operation over random invocations of the given apps."""
    rng = random.Random(5)
    names = list(per_app)
    picks = [(name, rng.randrange(per_app[name] - 120)) for name in names for _ in range(10)]
    for op in OPS.values():  # prepare statements; after 5 runs psycopg uses generic plans
        for name, i in picks[:10]:
            op(apps[name], name, i)
    samples: dict[str, list[float]] = {label: [] for label in OPS}
    for _ in range(SAMPLES):
        name = rng.choice(names)
        i = rng.randrange(per_app[name] - 120)
        for label, op in OPS.items():  # interleaved, so noise hits every operation alike
            started = time.perf_counter()
            op(apps[name], name, i)
            samples[label].append((time.perf_counter() - started) * 1e6)
    return {label: median(values) for label, values in samples.items()}


def settle(conn: psycopg.Connection[Any]) -> None:
    """ANALYZE (as autovacuum would), then CHECKPOINT so the seeding's WAL is not flushed
    during the measurements (skipped without the privilege)."""
    conn.execute("ANALYZE")
    try:
        conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        print("  (no CHECKPOINT privilege: measuring without a checkpoint)")


def time_purge(conn: psycopg.Connection[Any], url: str, repeats: int = 7) -> float:
    """Median µs of ``purge()`` of the 1k-invocation app (reseeded before each run)."""
    runs = []
    for _ in range(repeats):
        seed(conn, SMALL_APP, SMALL)
        settle(conn)
        app = app_for(url, SMALL_APP)
        app.state_backend.get_result(inv_id(SMALL_APP, 0))  # connect outside the clock
        started = time.perf_counter()
        app.state_backend.purge()
        runs.append((time.perf_counter() - started) * 1e6)
        left = conn.execute(
            "SELECT count(*) FROM pynenc_invocation WHERE app_id = %s", (SMALL_APP,)
        ).fetchone()
        assert left is not None and left[0] == 0
    seed(conn, SMALL_APP, SMALL)
    return median(runs)


def explain_all(url: str, app: str, i: int) -> dict[str, str]:
    """Generic-plan EXPLAIN ANALYZE of each statement: what a long-running process uses."""
    with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
        return _explain_all(conn, app, i)


def _explain_all(conn: psycopg.Connection[Any], app: str, i: int) -> dict[str, str]:
    plans = {}
    conn.execute("SET plan_cache_mode = force_generic_plan")
    for number, (label, make) in enumerate(EXPLAINED.items()):
        query, params = make(app, i)
        text = query
        for k in range(1, text.count("%s") + 1):
            text = text.replace("%s", f"${k}", 1)
        conn.execute(f"PREPARE scale_{number} AS {text}")
        literal = psycopg.ClientCursor(conn).mogrify(", ".join(["%s"] * len(params)), params)
        if label.startswith("purge"):
            with conn.transaction(force_rollback=True):
                rows = conn.execute(
                    f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE scale_{number}({literal})"
                ).fetchall()
        else:
            rows = conn.execute(
                f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE scale_{number}({literal})"
            ).fetchall()
        plans[label] = "\n".join(row[0] for row in rows)
    return plans


def uses_index(plan: str) -> bool:
    return "Index" in plan and "Seq Scan" not in plan


def relation_bytes(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(
        "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname = ANY(%s)",
        (list(STATE_TABLES),),
    ).fetchone()
    return int(row[0]) if row and row[0] else 0


def sqlite_bytes_per_invocation(n: int) -> float:
    tmp = Path(tempfile.mkdtemp(prefix="pynenc-scale-"))
    app = build_app(SQLITE, "scale-sqlite", "", "", tmp)
    PynencWorkload(app, n, "s").run()
    return sum(f.stat().st_size for f in tmp.iterdir()) / n


def ours_bytes_per_invocation_api(url: str, n: int) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        before = relation_bytes(conn)
        app = build_app(OURS_OFF, "scale-bytes", url, "", Path(tempfile.mkdtemp()))
        PynencWorkload(app, n, "b").run()
        conn.execute("VACUUM")
        after = relation_bytes(conn)
        app.state_backend.purge()
    return (after - before) / n


def rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() // 1024


def memory_profile(url: str, total: int, step: int) -> list[tuple[int, int]]:
    """RSS after every ``step`` invocations of the workload, one app, one process."""
    app = build_app(OURS_OFF, "scale-memory", url, "", Path(tempfile.mkdtemp()))
    samples = []
    for start in range(0, total, step):
        PynencWorkload(app, step, f"m{start}").run()
        gc.collect()
        samples.append((start + step, rss_kib()))
        print(f"  memory: {start + step} invocations, RSS {samples[-1][1] / 1024:.1f} MiB")
    cache = len(app.state_backend._runner_context_cache)
    print(f"  runner-context cache entries: {cache}")
    app.state_backend.purge()
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    parser.add_argument("--postgres-url", help="server to use (default: see module doc)")
    parser.add_argument("--database", default="pynenc_bench_scale")
    parser.add_argument("--invocations", type=int, default=TOTAL, help="total seeded")
    parser.add_argument("--memory-invocations", type=int, default=100_000)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)

    report: list[str] = []
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join(["python -m benchmarks.scale", *(a for a in given if a != "--write-docs")])
    with (
        postgres_server(args.postgres_url) as admin_url,
        bench_database(admin_url, args.database) as db,
    ):
        machine = machine_description(db.url)
        print("\n".join(machine))
        conn = psycopg.connect(db.url, autocommit=True)

        print(f"1k: seeding {SMALL} invocations")
        seed(conn, SMALL_APP, SMALL)
        settle(conn)
        small = {SMALL_APP: app_for(db.url, SMALL_APP)}
        at_1k = time_ops(small, {SMALL_APP: SMALL})
        at_1k["purge() of a 1k app"] = time_purge(conn, db.url)
        dispose_all()

        per_big = (args.invocations - SMALL) // BIG_APPS
        started = time.perf_counter()
        for n in range(BIG_APPS):
            seed(conn, f"scale-app-{n}", per_big)
            print(f"  seeded app {n + 1}/{BIG_APPS} ({time.perf_counter() - started:.0f}s)")
        seconds = time.perf_counter() - started
        settle(conn)
        count_row = conn.execute("SELECT count(*) FROM pynenc_invocation").fetchone()
        hist_row = conn.execute("SELECT count(*) FROM pynenc_invocation_history").fetchone()
        invocations = int(count_row[0]) if count_row else 0
        history = int(hist_row[0]) if hist_row else 0
        print(f"1M: {invocations} invocations, {history} history rows, seeded in {seconds:.0f}s")
        big = {f"scale-app-{n}": app_for(db.url, f"scale-app-{n}") for n in range(BIG_APPS)}
        at_1m = time_ops(big, dict.fromkeys(big, per_big))
        at_1m["purge() of a 1k app"] = time_purge(conn, db.url)
        plans = explain_all(db.url, "scale-app-3", per_big // 2)
        total_bytes = relation_bytes(conn)
        dispose_all()

        print("bytes per invocation (API workload, 10k invocations)")
        ours_api = ours_bytes_per_invocation_api(db.url, 10_000)
        sqlite_api = sqlite_bytes_per_invocation(10_000)
        print(f"memory over {args.memory_invocations} invocations")
        rss = memory_profile(db.url, args.memory_invocations, args.memory_invocations // 10)
        conn.close()
        dispose_all()

    lines = [
        "| operation | at 1k (µs, median) | at 1M (µs, median) | 1M / 1k | limit | index scan |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label in at_1k:
        ratio = at_1m[label] / at_1k[label]
        plan_key = (
            next(k for k in plans if k.startswith("purge")) if label.startswith("purge") else label
        )
        indexed = "yes" if uses_index(plans[plan_key]) else "**no**"
        ok = "" if ratio <= LIMIT else " **over**"
        lines.append(
            f"| {label} | {at_1k[label]:.0f} | {at_1m[label]:.0f} | {ratio:.2f}{ok} | "
            f"≤ {LIMIT} | {indexed} |"
        )
    report += [
        "Machine:",
        "",
        *[f"- {line}" for line in machine],
        "",
        f"Command: `{command}`",
        "",
        f"Seeded {invocations:,} invocations and {history:,} history rows (plus one result "
        f"each) over {BIG_APPS} apps + the 1k app, server-side `INSERT ... SELECT "
        f"generate_series`, in {seconds:.0f} s. Medians of {SAMPLES} calls on random "
        "invocations through the public API, operations interleaved.",
        "",
        *lines,
        "",
        "| storage | bytes per invocation |",
        "|---|---:|",
        f"| ours, seeded 1M (tables + indexes + TOAST) | {total_bytes / invocations:.0f} |",
        f"| ours, 10k through the API workload | {ours_api:.0f} |",
        f"| SQLiteStateBackend file, same 10k workload | {sqlite_api:.0f} |",
        "",
        f"RSS of one process over {args.memory_invocations:,} invocations (MiB): "
        + ", ".join(f"{n:,}: {kib / 1024:.1f}" for n, kib in rss),
        "",
        "<details><summary>Generic plans at 1M rows (EXPLAIN ANALYZE, BUFFERS)</summary>",
        "",
    ]
    for label, plan in plans.items():
        report += [f"{label}:", "", "```", plan, "```", ""]
    report.append("</details>")
    text = "\n".join(report)
    print()
    print(text)
    if args.write_docs:
        replace_section("scale", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
