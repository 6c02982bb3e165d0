"""The orchestrator's combined statements: one round trip for each step of an invocation's life.

pynenc composes each step from several component calls (a status change, then its history
row, then ``purgeable_since`` and the release of waiters for a final status, then a lookup of
trigger conditions; a registration as an invocation upsert, an orchestrator row, history rows
and a route). When every table involved is in this database and schema, the orchestrator sends
each step as one statement instead: data-modifying ``WITH`` clauses that run in one
transaction, so the step commits whole or not at all.

The status change at the heart of each statement is the same compare-and-set as
:mod:`pynenc_postgres.orchestrator.sql` (``UPDATE ... WHERE status = ANY(<allowed>) AND
<ownership rule>``, stamped with ``status_change_id``): every other write of the statement
reads from its ``RETURNING`` row, so it happens only for the one caller that won, and a
statement resent after a lost reply finds its own ``status_change_id`` and writes nothing
again. Each statement also reports whether the task has trigger conditions sourced from it
(one primary-key probe), so a process learns about conditions that another host registers
with the very next statement it sends, and reads them only when there are some.

Parameters are named (``%(name)s``); every statement takes ``app``. Each statement starts
with a comment naming its step (after its first keyword, where ``pg_stat_statements`` keeps
it), so an operator can tell the steps apart there and in ``pg_stat_activity``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from pynenc_postgres.db import tables as t
from pynenc_postgres.db.sql import quote_ident


@dataclass(frozen=True)
class Tables:
    """Qualified names of the tables the combined statements touch."""

    orch: str
    hist: str
    inv: str
    res: str
    exc: str
    wait: str
    queue: str
    src: str


@dataclass(frozen=True)
class TransitionKind:
    """Which variant of the combined status change a call needs.

    :param owner_check: the target status does not override ownership.
    :param final: the target is final: ``purgeable_since`` is set and waiters released.
    :param stores: ``result`` or ``exception`` stored by the winner, or ``""``.
    :param retry: the retry counter is incremented by the winner.
    :param routes: the winner is routed again, and the queue notified.
    """

    owner_check: bool
    final: bool
    stores: str = ""
    retry: bool = False
    routes: bool = False


@dataclass(frozen=True)
class LifecycleSql:
    tables: Tables
    register: str
    register_and_route: str
    take: str
    claim_and_take: str
    claim_and_take_relaxed: str
    final_with_results: str

    def transition(self, kind: TransitionKind) -> str:
        return _transition(self.tables, kind)


@cache
def lifecycle_statements(schema: str) -> LifecycleSql:
    """Render the combined statements for ``schema`` (cached per process and schema)."""
    s = quote_ident(schema)
    tables = Tables(
        orch=f"{s}.{t.ORCHESTRATOR_INVOCATION}",
        hist=f"{s}.{t.INVOCATION_HISTORY}",
        inv=f"{s}.{t.INVOCATION}",
        res=f"{s}.{t.INVOCATION_RESULT}",
        exc=f"{s}.{t.INVOCATION_EXCEPTION}",
        wait=f"{s}.{t.ORCHESTRATOR_WAITING}",
        queue=f"{s}.{t.BROKER_MESSAGE}",
        src=f"{s}.{t.TRIGGER_SOURCE_TASK_CONDITION}",
    )
    return LifecycleSql(
        tables=tables,
        register=_register(tables, routes=False),
        register_and_route=_register(tables, routes=True),
        take=_take(tables),
        claim_and_take=_claim_and_take(tables, relaxed=False),
        claim_and_take_relaxed=_claim_and_take(tables, relaxed=True),
        # The final ones among ``ids``, each with its result when it succeeded and the
        # result is small: the caller reads it next, and needs no round trip for it.
        final_with_results=f"""
            SELECT /* pynenc-postgres: final statuses with results */
                   o.invocation_id, o.status, o.status_owner_id, o.status_set_at,
                   CASE WHEN o.status = 'success' THEN (
                       SELECT r.serialized_result FROM {tables.res} r
                       WHERE r.app_id = o.app_id AND r.invocation_id = o.invocation_id
                         AND octet_length(r.serialized_result) <= %(max_bytes)s) END
            FROM {tables.orch} o
            WHERE o.app_id = %(app)s AND o.invocation_id = ANY(%(ids)s::text[])
              AND o.status = ANY(%(finals)s::text[])""",
    )


_HISTORY_KEY = "(app_id, invocation_id, recorded_at, status)"


def _recorded_after_latest(x: Tables, invocation_id: str) -> str:
    """The client's stamp for a new history row, never before the invocation's latest row.

    pynenc orders an invocation's history by these stamps. A stamp read from the clock
    just before a claim can be older than the registration it claims (the registering
    thread stamped later but committed first), and another host's clock may be behind:
    either way the new status would sort before the one it follows. One index probe on
    the history's key keeps the order the rows were written in.
    """
    return f"""GREATEST(%(recorded)s, (
                SELECT max(h.recorded_at) + interval '1 microsecond' FROM {x.hist} h
                WHERE h.app_id = %(app)s AND h.invocation_id = {invocation_id}))"""


def _register(x: Tables, routes: bool) -> str:
    """A batch of new invocations: rows, REGISTERED status, history, and (optionally) routes.

    The batch is one JSON array of rows (one parameter: adapting a dozen arrays of a big
    batch costs the client more than the server takes to parse the document), read as
    ``jsonb``: parsed once, where ``json`` parses an element again for each of its dozen
    fields (about a fifth of the statement's time). A ``\\u0000`` escape (a NUL, which no
    text column can hold) fails the statement either way, with nothing written. Rows come
    in submission order; rows are locked in id order (one order for every
    writer, so concurrent batches cannot deadlock) and routed in submission order (routing
    order is claim order). Invocations already registered keep their status, as in
    pynenc's ``register_new_invocations``, which also writes their history row again and
    routes them again.
    """
    route = (
        f""",
        routed AS (
            INSERT INTO {x.queue} (app_id, queue_name, priority, invocation_id)
            SELECT %(app)s, u.queue_name, u.priority, u.invocation_id FROM u ORDER BY u.n
        )"""
        if routes
        else ""
    )
    notify = (
        ", (SELECT count(pg_notify(%(channel)s, p)) FROM unnest(%(payloads)s::text[]) AS p)"
        if routes
        else ", 0"
    )
    name = "register and route a batch" if routes else "register a batch"
    return f"""
        WITH /* pynenc-postgres: {name} */ u AS (
            SELECT r->>0 AS invocation_id, r->>1 AS task_id, r->>2 AS call_id,
                   r->>3 AS arguments_id, r->>4 AS serialized_arguments,
                   r->>5 AS parent_invocation_id, r->>6 AS parent_event_id,
                   r->>7 AS workflow_id, r->>8 AS workflow_type_key,
                   r->>9 AS parent_workflow_id, r->>10 AS queue_name,
                   (r->>11)::float8 AS priority, n
            FROM jsonb_array_elements(%(rows)s::jsonb) WITH ORDINALITY AS e(r, n)
        ),
        stored AS (
            INSERT INTO {x.inv} AS i (
                app_id, invocation_id, task_id, call_id, arguments_id, serialized_arguments,
                parent_invocation_id, parent_event_id, workflow_id, workflow_type_key,
                parent_workflow_id)
            SELECT %(app)s, u.invocation_id, u.task_id, u.call_id, u.arguments_id,
                   u.serialized_arguments, u.parent_invocation_id, u.parent_event_id,
                   u.workflow_id, u.workflow_type_key, u.parent_workflow_id
            FROM u ORDER BY u.invocation_id
            ON CONFLICT (app_id, invocation_id) DO UPDATE SET
                task_id = excluded.task_id,
                call_id = excluded.call_id,
                arguments_id = excluded.arguments_id,
                serialized_arguments = excluded.serialized_arguments,
                parent_invocation_id = excluded.parent_invocation_id,
                parent_event_id = excluded.parent_event_id,
                workflow_id = excluded.workflow_id,
                workflow_type_key = excluded.workflow_type_key,
                parent_workflow_id = excluded.parent_workflow_id,
                updated_at = now()
            -- A row written again unchanged (a resent statement) is left alone.
            WHERE (i.task_id, i.call_id, i.arguments_id, i.serialized_arguments,
                   i.parent_invocation_id, i.parent_event_id, i.workflow_id,
                   i.workflow_type_key, i.parent_workflow_id)
              IS DISTINCT FROM
                  (excluded.task_id, excluded.call_id, excluded.arguments_id,
                   excluded.serialized_arguments, excluded.parent_invocation_id,
                   excluded.parent_event_id, excluded.workflow_id, excluded.workflow_type_key,
                   excluded.parent_workflow_id)
        ),
        registered AS (
            INSERT INTO {x.orch} (app_id, invocation_id, task_id, call_id, status,
                                  status_owner_id, status_set_at)
            SELECT %(app)s, u.invocation_id, u.task_id, u.call_id, 'registered', %(runner)s, now()
            FROM u ORDER BY u.invocation_id
            ON CONFLICT (app_id, invocation_id) DO NOTHING
        ),
        history AS (
            INSERT INTO {x.hist} (app_id, invocation_id, recorded_at, status, status_owner_id,
                                  status_set_at, runner_id, registered_by_invocation_id)
            SELECT %(app)s, u.invocation_id, %(recorded)s, 'registered', %(runner)s, now(),
                   %(ctx)s, u.parent_invocation_id
            FROM u ORDER BY u.invocation_id
            ON CONFLICT {_HISTORY_KEY} DO NOTHING
        ){route}
        SELECT now(),
               ARRAY(SELECT DISTINCT c.task_id FROM {x.src} c
                     WHERE c.app_id = %(app)s AND c.task_id IN (SELECT u.task_id FROM u)){notify}"""


def _take(x: Tables) -> str:
    """After a worker took ``id`` from the queue: PENDING for it, if it may run at once.

    The move happens only for a runnable status and a task that the worker knows needs no
    concurrency check (``free_tasks``); either way the statement returns the status the
    invocation had, the invocation's row and whether trigger conditions watch its task, so
    the worker has everything pynenc's loop reads without another round trip. The status
    is the one before the statement, with the id of the change that set it: a take resent
    after a lost reply finds its own.
    """
    return _taking(x, "SELECT %(id)s::text AS invocation_id", "", "take")


def _claim_and_take(x: Tables, relaxed: bool) -> str:
    """The broker's claim and the take in one statement, for a queue in this database.

    The claim is the broker's (``DELETE ... FOR UPDATE SKIP LOCKED``): concurrent workers
    take different rows. Its commit may skip the wait for the WAL flush, as a claim alone
    does (``postgres_broker_claim_synchronous_commit``): a crash can then only return the
    invocation to the queue and to the status it had, and nothing has run yet, because the
    RUNNING change that precedes the task body waits for its flush, which includes this
    commit's.
    """
    claimed = f"""DELETE FROM {x.queue}
            WHERE app_id = %(app)s AND message_id = (
                SELECT message_id FROM {x.queue}
                WHERE app_id = %(app)s AND queue_name = %(queue)s
                ORDER BY priority DESC, message_id
                LIMIT 1
                FOR UPDATE SKIP LOCKED)
            RETURNING invocation_id"""
    commit = ", set_config('synchronous_commit', %(commit)s, true)" if relaxed else ""
    return _taking(x, claimed, commit, "claim and take")


_MAY_MOVE_AT_ONCE = """(
                  (o.status <> ALL(%(required)s::text[])
                   OR o.status_owner_id IS NOT DISTINCT FROM %(runner)s)
                  AND o.task_id = ANY(%(free_tasks)s::text[]))"""
"""A take moves a runnable invocation to PENDING itself when its owner allows it and its
task needs no concurrency check."""


def _taking(x: Tables, claimed: str, commit: str, name: str) -> str:
    # A take is about one invocation (the claim takes at most one row). Each table is
    # reached through its primary key by that one id, a value the planner knows is a
    # single row: joined to the claim instead, statistics taken while the tables were
    # small (or a backlog whose statuses they do not know) can make it read every
    # runnable invocation of the app through the status index to find the claimed one.
    taken = "(SELECT invocation_id FROM claimed)"
    return f"""
        WITH /* pynenc-postgres: {name} */ claimed AS (
            {claimed}
        ),
        moved AS (
            UPDATE {x.orch} o SET
                status = 'pending',
                status_owner_id = %(runner)s,
                status_set_at = clock_timestamp(),
                status_change_id = %(change)s,
                taken_at = NULL
            WHERE o.app_id = %(app)s AND o.invocation_id = {taken}
              AND o.status = ANY(%(from)s::text[])
              AND {_MAY_MOVE_AT_ONCE}
            RETURNING o.invocation_id, o.status_owner_id, o.status_set_at
        ),
        -- Runnable but left for a separate status change: the time it was taken, so
        -- that a worker stopping in between leaves a trace (the complement of moved's
        -- condition: a statement never updates one row twice).
        traced AS (
            UPDATE {x.orch} o SET taken_at = clock_timestamp()
            WHERE o.app_id = %(app)s AND o.invocation_id = {taken}
              AND o.status = ANY(%(from)s::text[])
              AND NOT {_MAY_MOVE_AT_ONCE}
        ),
        history AS (
            INSERT INTO {x.hist} (app_id, invocation_id, recorded_at, status, status_owner_id,
                                  status_set_at, runner_id)
            SELECT %(app)s, m.invocation_id, {_recorded_after_latest(x, "m.invocation_id")},
                   'pending', m.status_owner_id,
                   m.status_set_at, %(ctx)s
            FROM moved m
            ON CONFLICT {_HISTORY_KEY} DO NOTHING
        )
        SELECT c.invocation_id, o.status, o.status_change_id, o.status_set_at,
               (SELECT m.status_set_at FROM moved m),
               i.call_id, i.serialized_arguments, i.parent_invocation_id, i.parent_event_id,
               i.workflow_id, i.workflow_type_key, i.parent_workflow_id,
               EXISTS (SELECT 1 FROM {x.src} s
                       WHERE s.app_id = o.app_id AND s.task_id = o.task_id){commit}
        FROM claimed c
        LEFT JOIN {x.orch} o ON o.app_id = %(app)s AND o.invocation_id = {taken}
        LEFT JOIN {x.inv} i ON i.app_id = %(app)s AND i.invocation_id = {taken}"""


@cache
def _transition(x: Tables, kind: TransitionKind) -> str:
    """One status change with everything pynenc writes after it, for the winner only."""
    owner = (
        """
              AND (status <> ALL(%(required)s::text[])
                   OR status_owner_id IS NOT DISTINCT FROM %(runner)s)"""
        if kind.owner_check
        else ""
    )
    extra_set = ""
    if kind.final:
        extra_set += ",\n                purgeable_since = now()"
    if kind.retry:
        extra_set += ",\n                retries = retries + 1"
    ctes = [
        f"""moved AS (
            UPDATE {x.orch} SET
                status = %(status)s,
                status_owner_id = CASE WHEN %(keeps)s::boolean THEN status_owner_id
                                       ELSE %(owner)s::text END,
                status_set_at = clock_timestamp(),
                status_change_id = %(change)s,
                taken_at = NULL{extra_set}
            WHERE app_id = %(app)s AND invocation_id = %(id)s
              AND status = ANY(%(from)s::text[]){owner}
            RETURNING task_id, status_owner_id, status_set_at
        )""",
        f"""history AS (
            INSERT INTO {x.hist} (app_id, invocation_id, recorded_at, status, status_owner_id,
                                  status_set_at, runner_id)
            SELECT %(app)s, %(id)s, {_recorded_after_latest(x, "%(id)s")}, %(status)s,
                   m.status_owner_id,
                   m.status_set_at, %(ctx)s
            FROM moved m
            ON CONFLICT {_HISTORY_KEY} DO NOTHING
        )""",
    ]
    if kind.final:
        # A finished invocation neither blocks nor waits any more.
        ctes.append(
            f"""released AS (
            DELETE FROM {x.wait} w
            WHERE w.app_id = %(app)s
              AND (w.waited_invocation_id = %(id)s OR w.waiter_invocation_id = %(id)s)
              AND EXISTS (SELECT 1 FROM moved)
        )"""
        )
    if kind.stores == "result":
        ctes.append(
            f"""stored AS (
            INSERT INTO {x.res} (app_id, invocation_id, serialized_result)
            SELECT %(app)s, %(id)s, %(result)s FROM moved
            ON CONFLICT (app_id, invocation_id) DO UPDATE
            SET serialized_result = excluded.serialized_result, stored_at = now()
        )"""
        )
    elif kind.stores == "exception":
        ctes.append(
            f"""stored AS (
            INSERT INTO {x.exc} (app_id, invocation_id, error_name, is_pynenc_error,
                                 serialized_exception)
            SELECT %(app)s, %(id)s, %(error_name)s, %(is_pynenc_error)s, %(exception)s
            FROM moved
            ON CONFLICT (app_id, invocation_id) DO UPDATE
            SET error_name = excluded.error_name, is_pynenc_error = excluded.is_pynenc_error,
                serialized_exception = excluded.serialized_exception, stored_at = now()
        )"""
        )
    notify = ""
    if kind.routes:
        ctes.append(
            f"""routed AS (
            INSERT INTO {x.queue} (app_id, queue_name, priority, invocation_id)
            SELECT %(app)s, %(queue)s, %(priority)s, %(id)s FROM moved
        )"""
        )
        notify = ", pg_notify(%(channel)s, %(payload)s)"
    name = "status change"
    if kind.final:
        name += ", final"
    if kind.stores:
        name += f", with the {kind.stores}"
    if kind.retry:
        name += ", retry counted"
    if kind.routes:
        name += ", routed again"
    return f"""
        WITH /* pynenc-postgres: {name} */ {", ".join(ctes)}
        SELECT m.status_owner_id, m.status_set_at,
               EXISTS (SELECT 1 FROM {x.src} c
                       WHERE c.app_id = %(app)s AND c.task_id = m.task_id){notify}
        FROM moved m"""
