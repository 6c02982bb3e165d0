"""Every statement the trigger runs, written once per Postgres schema.

The two coordination points are single conditional statements, so any number of
processes on any number of hosts can race them and exactly one wins:

* the cron compare-and-set, an ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` (first
  tick of a condition) or an ``UPDATE ... WHERE last_execution = expected`` (every
  later tick), each ``RETURNING`` a row only for the winner;
* the trigger-run claim, an ``INSERT ... ON CONFLICT DO UPDATE ... WHERE expires_at <=
  clock_timestamp()``: a new claim inserts, an expired one is taken over, a live one
  is left alone. Expiry is measured with the database server's clock only.

Both carry a random token of the call, so a statement resent by the retry loop after
its commit was acknowledged but the answer lost still reports the win it already had.
Other writes are idempotent upserts. Each read is backed by an index whose leading
column is ``app_id``. Filters that are optional in pynenc's API select one of a few
fixed statement variants instead of ``(%s IS NULL OR ...)`` clauses, which a generic
prepared plan could not serve from an index.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from pynenc_postgres.db import tables as t

# Shared with the state backend until the identifier helper moves into db/.
from pynenc_postgres.db.sql import quote_ident

# Optional filters of the event queries, in the order their parameters are passed.
# Each fragment reads the event row as ``e``.
EVENT_FILTERS: dict[str, str] = {
    "event_code": "e.event_code = %s",
    "start_time": "e.occurred_at >= %s",
    "end_time": "e.occurred_at <= %s",
    "matched": "e.matched_condition_count > 0",
    "unmatched": "e.matched_condition_count = 0",
    "triggered": "EXISTS ({links})",
    "untriggered": "NOT EXISTS ({links})",
    "emitted_by_invocation_id": "e.emitted_by_invocation_id = %s",
    "emitted_by_task_id": "e.emitted_by_task_id = %s",
}

# Filters above whose fragment takes no parameter.
FLAG_FILTERS = frozenset({"matched", "unmatched", "triggered", "untriggered"})


@dataclass(frozen=True)
class TriggerSql:
    """SQL text for one schema; parameters use psycopg's ``%s`` / ``%s`` placeholders."""

    schema: str
    upsert_condition: str
    get_conditions: str
    all_conditions: str
    add_source_task_condition: str
    conditions_of_source_task: str
    register_trigger: str
    get_triggers: str
    triggers_for_condition: str
    clean_task_triggers: str
    record_valid_conditions: str
    valid_conditions: str
    clear_valid_conditions: str
    last_cron_execution: str
    first_cron_execution: str
    next_cron_execution: str
    claim_trigger_run: str
    store_event: str
    get_events_by_id: str
    link_trigger_run_to_events: str
    invocations_of_event: str
    event_codes: str
    store_trigger_run: str
    get_trigger_runs: str
    runs_for_event: str
    runs_for_invocation: str
    runs_sourced_by_invocation: str
    runs_for_valid_condition: str
    referenced_atomic_service_runs: str
    age_purge_events: str
    cap_purge_events: str
    age_purge_trigger_runs: str
    cap_purge_trigger_runs: str
    purge_expired_claims: str
    cascade_delete_runs_for_events: str
    purge_app: tuple[str, ...]


def _names(schema: str) -> dict[str, str]:
    s = quote_ident(schema)
    return {
        "cond": f"{s}.{t.TRIGGER_CONDITION}",
        "src": f"{s}.{t.TRIGGER_SOURCE_TASK_CONDITION}",
        "defn": f"{s}.{t.TRIGGER_DEFINITION}",
        "link": f"{s}.{t.TRIGGER_DEFINITION_CONDITION}",
        "valid": f"{s}.{t.TRIGGER_VALID_CONDITION}",
        "cron": f"{s}.{t.TRIGGER_CRON_EXECUTION}",
        "claim": f"{s}.{t.TRIGGER_RUN_CLAIM}",
        "event": f"{s}.{t.TRIGGER_EVENT}",
        "event_inv": f"{s}.{t.TRIGGER_EVENT_INVOCATION}",
        "run": f"{s}.{t.TRIGGER_RUN}",
        "part": f"{s}.{t.TRIGGER_RUN_PARTICIPANT}",
    }


@cache
def statements(schema: str) -> TriggerSql:
    """Render the statements for ``schema`` (cached: built once per process and schema)."""
    n = _names(schema)
    cond, src, defn, link, valid = n["cond"], n["src"], n["defn"], n["link"], n["valid"]
    cron, claim, event, event_inv = n["cron"], n["claim"], n["event"], n["event_inv"]
    run, part = n["run"], n["part"]
    trigger_columns = f"""d.trigger_id, d.task_id, d.logic, d.argument_provider_json,
            ARRAY(SELECT l.condition_id FROM {link} l
                  WHERE l.app_id = d.app_id AND l.trigger_id = d.trigger_id
                  ORDER BY l.position)"""
    event_columns = _event_columns(schema)

    def runs_with_participant(column: str) -> str:
        return f"""
            SELECT r.trigger_run_json FROM {run} r
            WHERE r.app_id = %s AND r.trigger_run_id IN (
                SELECT p.trigger_run_id FROM {part} p WHERE p.app_id = %s AND p.{column} = %s)
            ORDER BY r.executed_at, r.trigger_run_id"""

    def drop_events(victims: str) -> str:
        """Delete the events ``victims`` selects, and their invocation links."""
        return f"""
            WITH victims AS ({victims}),
            gone AS (
                DELETE FROM {event} e USING victims
                WHERE e.app_id = %s AND e.event_id = victims.event_id
                RETURNING e.event_id
            ),
            links AS (
                DELETE FROM {event_inv} l USING gone
                WHERE l.app_id = %s AND l.event_id = gone.event_id
            )
            SELECT event_id FROM gone"""

    def drop_runs(victims: str) -> str:
        """Delete the trigger runs ``victims`` selects, and their participants."""
        return f"""
            WITH victims AS ({victims}),
            gone AS (
                DELETE FROM {run} r USING victims
                WHERE r.app_id = %s AND r.trigger_run_id = victims.trigger_run_id
                RETURNING r.trigger_run_id
            ),
            parts AS (
                DELETE FROM {part} p USING victims
                WHERE p.app_id = %s AND p.trigger_run_id = victims.trigger_run_id
            )
            SELECT count(*) FROM gone"""

    return TriggerSql(
        schema=schema,
        # Re-registering an unchanged condition (every runner start) writes nothing.
        upsert_condition=f"""
            INSERT INTO {cond} AS c (app_id, condition_id, condition_type, condition_json)
            VALUES (%s, %s, %s, %s)
            ON CONFLICT (app_id, condition_id) DO UPDATE SET
                condition_type = excluded.condition_type,
                condition_json = excluded.condition_json,
                updated_at = now()
            WHERE c.condition_json IS DISTINCT FROM excluded.condition_json""",
        get_conditions=f"""
            SELECT condition_id, condition_json FROM {cond}
            WHERE app_id = %s AND condition_id = ANY(%s::text[])""",
        all_conditions=f"""
            SELECT condition_json FROM {cond} WHERE app_id = %s ORDER BY condition_id""",
        add_source_task_condition=f"""
            INSERT INTO {src} (app_id, task_id, condition_id) VALUES (%s, %s, %s)
            ON CONFLICT DO NOTHING""",
        conditions_of_source_task=f"""
            SELECT c.condition_json FROM {src} s
            JOIN {cond} c ON c.app_id = s.app_id AND c.condition_id = s.condition_id
            WHERE s.app_id = %s AND s.task_id = %s ORDER BY s.condition_id""",
        # The definition and its condition list in one statement: the upsert, the removal
        # of conditions it no longer lists, and the (re)numbered list touch distinct rows.
        register_trigger=f"""
            WITH d AS (
                INSERT INTO {defn} (app_id, trigger_id, task_id, logic, argument_provider_json)
                VALUES (%s, %s, %s, %s, %s)
                ON CONFLICT (app_id, trigger_id) DO UPDATE SET
                    task_id = excluded.task_id,
                    logic = excluded.logic,
                    argument_provider_json = excluded.argument_provider_json,
                    updated_at = now()
            ),
            stale AS (
                DELETE FROM {link}
                WHERE app_id = %s AND trigger_id = %s
                  AND NOT (condition_id = ANY(%s::text[]))
            )
            INSERT INTO {link} (app_id, condition_id, trigger_id, position)
            SELECT %s, u.condition_id, %s, u.position
            FROM unnest(%s::text[]) WITH ORDINALITY AS u(condition_id, position)
            ON CONFLICT (app_id, condition_id, trigger_id) DO UPDATE
            SET position = excluded.position""",
        get_triggers=f"""
            SELECT {trigger_columns}
            FROM {defn} d WHERE d.app_id = %s AND d.trigger_id = ANY(%s::text[])""",
        triggers_for_condition=f"""
            SELECT {trigger_columns}
            FROM {link} c JOIN {defn} d ON d.app_id = c.app_id AND d.trigger_id = c.trigger_id
            WHERE c.app_id = %s AND c.condition_id = %s ORDER BY d.trigger_id""",
        clean_task_triggers=f"""
            WITH gone AS (
                DELETE FROM {defn} WHERE app_id = %s AND task_id = %s
                RETURNING trigger_id
            )
            DELETE FROM {link} l USING gone
            WHERE l.app_id = %s AND l.trigger_id = gone.trigger_id""",
        record_valid_conditions=f"""
            INSERT INTO {valid} (app_id, valid_condition_id, condition_id, valid_condition_json)
            SELECT %s, u.* FROM unnest(%s::text[], %s::text[], %s::text[]) AS u
            ON CONFLICT (app_id, valid_condition_id) DO UPDATE SET
                condition_id = excluded.condition_id,
                valid_condition_json = excluded.valid_condition_json""",
        valid_conditions=f"""
            SELECT valid_condition_id, valid_condition_json FROM {valid}
            WHERE app_id = %s ORDER BY recorded_at, valid_condition_id""",
        clear_valid_conditions=f"""
            DELETE FROM {valid} WHERE app_id = %s AND valid_condition_id = ANY(%s::text[])""",
        last_cron_execution=f"""
            SELECT last_execution FROM {cron} WHERE app_id = %s AND condition_id = %s""",
        # No execution recorded yet: the one insert that lands wins; the others meet
        # its row and update nothing (unless it is their own, resent).
        first_cron_execution=f"""
            INSERT INTO {cron} AS c (app_id, condition_id, last_execution, claim_token)
            VALUES (%s, %s, %s, %s)
            ON CONFLICT (app_id, condition_id) DO UPDATE
            SET last_execution = excluded.last_execution
            WHERE c.claim_token = excluded.claim_token
              AND c.last_execution = excluded.last_execution
            RETURNING 1""",
        # An UPDATE re-checks its WHERE on the row version a concurrent winner
        # committed, so every other process finds last_execution changed.
        next_cron_execution=f"""
            UPDATE {cron} AS c
            SET last_execution = %s, claim_token = %s, updated_at = now()
            WHERE c.app_id = %s AND c.condition_id = %s
              AND (c.last_execution = %s
                   OR (c.claim_token = %s AND c.last_execution = %s))
            RETURNING 1""",
        claim_trigger_run=f"""
            INSERT INTO {claim} AS c (app_id, trigger_run_id, claim_token, claimed_at, expires_at)
            VALUES (%s, %s, %s, clock_timestamp(),
                    clock_timestamp() + make_interval(secs => %s::double precision))
            ON CONFLICT (app_id, trigger_run_id) DO UPDATE SET
                claim_token = excluded.claim_token,
                claimed_at = excluded.claimed_at,
                expires_at = excluded.expires_at
            WHERE c.expires_at <= clock_timestamp() OR c.claim_token = excluded.claim_token
            RETURNING 1""",
        # Invocation ids already on the record (callers that fill it themselves) are
        # seeded into the link table, which is where reads take them from.
        store_event=f"""
            WITH e AS (
                INSERT INTO {event} (
                    app_id, event_id, event_code, occurred_at, matched_condition_count,
                    emitted_by_invocation_id, emitted_by_task_id, emitted_by_runner_context_id,
                    event_json)
                VALUES (%s, %s, %s, %s, %s,
                        %s, %s, %s, %s)
                ON CONFLICT (app_id, event_id) DO UPDATE SET
                    event_code = excluded.event_code,
                    occurred_at = excluded.occurred_at,
                    matched_condition_count = excluded.matched_condition_count,
                    emitted_by_invocation_id = excluded.emitted_by_invocation_id,
                    emitted_by_task_id = excluded.emitted_by_task_id,
                    emitted_by_runner_context_id = excluded.emitted_by_runner_context_id,
                    event_json = excluded.event_json,
                    stored_at = now()
            )
            INSERT INTO {event_inv} (app_id, event_id, invocation_id, trigger_run_id, linked_at)
            SELECT %s, %s, u.invocation_id, NULL, clock_timestamp()
            FROM unnest(%s::text[]) WITH ORDINALITY AS u(invocation_id, n)
            ORDER BY u.n
            ON CONFLICT DO NOTHING""",
        get_events_by_id=f"""
            SELECT {event_columns}
            FROM {event} e WHERE e.app_id = %s AND e.event_id = ANY(%s::text[])""",
        link_trigger_run_to_events=f"""
            INSERT INTO {event_inv} (app_id, event_id, invocation_id, trigger_run_id, linked_at)
            SELECT %s, u.event_id, %s, %s, clock_timestamp() FROM unnest(%s::text[]) AS u(event_id)
            ON CONFLICT DO NOTHING""",
        invocations_of_event=f"""
            SELECT invocation_id FROM {event_inv}
            WHERE app_id = %s AND event_id = %s ORDER BY linked_at, invocation_id""",
        event_codes=f"""
            SELECT DISTINCT event_code FROM {event} WHERE app_id = %s ORDER BY event_code""",
        # The run and its participant list in one statement, like register_trigger.
        store_trigger_run=f"""
            WITH r AS (
                INSERT INTO {run} (
                    app_id, trigger_run_id, trigger_id, task_id, logic, triggered_invocation_id,
                    atomic_service_run_id, claimed_at, executed_at, trigger_run_json)
                VALUES (%s, %s, %s, %s, %s,
                        %s, %s,
                        %s::timestamptz,
                        coalesce(%s::timestamptz, %s::timestamptz, now()),
                        %s)
                ON CONFLICT (app_id, trigger_run_id) DO UPDATE SET
                    trigger_id = excluded.trigger_id,
                    task_id = excluded.task_id,
                    logic = excluded.logic,
                    triggered_invocation_id = excluded.triggered_invocation_id,
                    atomic_service_run_id = excluded.atomic_service_run_id,
                    claimed_at = excluded.claimed_at,
                    executed_at = excluded.executed_at,
                    trigger_run_json = excluded.trigger_run_json,
                    stored_at = now()
            ),
            stale AS (
                DELETE FROM {part}
                WHERE app_id = %s AND trigger_run_id = %s
                  AND position > cardinality(%s::text[])
            )
            INSERT INTO {part} (
                app_id, trigger_run_id, position, context_type, condition_id,
                valid_condition_id, event_id, source_invocation_id)
            SELECT %s, %s, u.position, u.context_type, u.condition_id,
                   u.valid_condition_id, u.event_id, u.source_invocation_id
            FROM unnest(%s::text[], %s::text[],
                        %s::text[], %s::text[],
                        %s::text[])
                 WITH ORDINALITY AS u(context_type, condition_id, valid_condition_id, event_id,
                                      source_invocation_id, position)
            ON CONFLICT (app_id, trigger_run_id, position) DO UPDATE SET
                context_type = excluded.context_type,
                condition_id = excluded.condition_id,
                valid_condition_id = excluded.valid_condition_id,
                event_id = excluded.event_id,
                source_invocation_id = excluded.source_invocation_id""",
        get_trigger_runs=f"""
            SELECT trigger_run_id, trigger_run_json FROM {run}
            WHERE app_id = %s AND trigger_run_id = ANY(%s::text[])""",
        runs_for_event=runs_with_participant("event_id"),
        runs_for_invocation=f"""
            SELECT trigger_run_json FROM {run}
            WHERE app_id = %s AND triggered_invocation_id = %s
            ORDER BY executed_at, trigger_run_id""",
        runs_sourced_by_invocation=runs_with_participant("source_invocation_id"),
        runs_for_valid_condition=runs_with_participant("valid_condition_id"),
        referenced_atomic_service_runs=f"""
            SELECT DISTINCT atomic_service_run_id FROM {run}
            WHERE app_id = %s AND atomic_service_run_id IS NOT NULL""",
        # Retention deletes at most a batch of rows per statement, one short transaction each.
        age_purge_events=drop_events(
            f"""SELECT event_id FROM {event}
                WHERE app_id = %s AND occurred_at < %s
                ORDER BY occurred_at LIMIT %s"""
        ),
        cap_purge_events=drop_events(
            f"""SELECT event_id FROM {event} WHERE app_id = %s
                ORDER BY occurred_at DESC, event_id DESC OFFSET %s LIMIT %s"""
        ),
        age_purge_trigger_runs=drop_runs(
            f"""SELECT trigger_run_id FROM {run}
                WHERE app_id = %s AND executed_at < %s
                ORDER BY executed_at LIMIT %s"""
        ),
        cap_purge_trigger_runs=drop_runs(
            f"""SELECT trigger_run_id FROM {run} WHERE app_id = %s
                ORDER BY executed_at DESC, trigger_run_id DESC OFFSET %s LIMIT %s"""
        ),
        purge_expired_claims=f"""
            WITH gone AS (
                DELETE FROM {claim} c USING (
                    SELECT trigger_run_id FROM {claim}
                    WHERE app_id = %s AND expires_at < %s
                    ORDER BY expires_at LIMIT %s
                ) victims
                WHERE c.app_id = %s AND c.trigger_run_id = victims.trigger_run_id
                RETURNING 1
            )
            SELECT count(*) FROM gone""",
        cascade_delete_runs_for_events=drop_runs(
            f"""SELECT DISTINCT trigger_run_id FROM {part}
                WHERE app_id = %s AND event_id = ANY(%s::text[])"""
        ),
        purge_app=tuple(
            f"DELETE FROM {n[key]} WHERE app_id = %s"
            for key in (
                "part",
                "run",
                "event_inv",
                "event",
                "claim",
                "cron",
                "valid",
                "link",
                "defn",
                "src",
                "cond",
            )
        ),
    )


def _event_columns(schema: str) -> str:
    """Event id, JSON record, and the invocations it caused in the order they were linked."""
    return f"""e.event_id, e.event_json,
            ARRAY(SELECT l.invocation_id FROM {_names(schema)["event_inv"]} l
                  WHERE l.app_id = e.app_id AND l.event_id = e.event_id
                  ORDER BY l.linked_at, l.invocation_id)"""


def _event_where(filters: tuple[str, ...], schema: str) -> str:
    links = (
        f"SELECT 1 FROM {_names(schema)['event_inv']} l "
        "WHERE l.app_id = e.app_id AND l.event_id = e.event_id"
    )
    return "".join(f" AND {EVENT_FILTERS[name].format(links=links)}" for name in filters)


@cache
def events_page(schema: str, filters: tuple[str, ...]) -> str:
    """Events of an app, newest first, with ``filters`` (names of :data:`EVENT_FILTERS`).

    Parameters: app id, one value per filter that takes one, limit, offset.
    """
    event = _names(schema)["event"]
    return f"""
            SELECT {_event_columns(schema)}
            FROM {event} e WHERE e.app_id = %s{_event_where(filters, schema)}
            ORDER BY e.occurred_at DESC, e.event_id DESC LIMIT %s OFFSET %s"""


@cache
def events_count(schema: str, filters: tuple[str, ...]) -> str:
    """Number of events matching ``filters``; parameters as :func:`events_page` without paging."""
    event = _names(schema)["event"]
    return f"SELECT count(*) FROM {event} e WHERE e.app_id = %s{_event_where(filters, schema)}"


@cache
def event_markers(schema: str, filters: tuple[str, ...]) -> str:
    """Marker projection of the events in a window, oldest first.

    Parameters: app id, start, end, one value per filter that takes one, limit, offset.
    """
    n = _names(schema)
    where = _event_where(("start_time", "end_time", *filters), schema)
    return f"""
            SELECT e.event_id, e.event_code, e.occurred_at, e.matched_condition_count > 0,
                   EXISTS (SELECT 1 FROM {n["event_inv"]} l
                           WHERE l.app_id = e.app_id AND l.event_id = e.event_id),
                   e.emitted_by_invocation_id, e.emitted_by_runner_context_id
            FROM {n["event"]} e WHERE e.app_id = %s{where}
            ORDER BY e.occurred_at, e.event_id LIMIT %s OFFSET %s"""


@cache
def runs_in_timerange(schema: str, *, by_task: bool, by_event_code: bool) -> str:
    """Trigger runs executed in a window, oldest first.

    Parameters: app id, start, end, the task key if ``by_task``, the event code if
    ``by_event_code``, and the limit (None: no limit).
    """
    n = _names(schema)
    where = ""
    if by_task:
        where += " AND r.task_id = %s"
    if by_event_code:
        where += f"""
              AND EXISTS (
                SELECT 1 FROM {n["part"]} p
                JOIN {n["event"]} e ON e.app_id = p.app_id AND e.event_id = p.event_id
                WHERE p.app_id = r.app_id AND p.trigger_run_id = r.trigger_run_id
                  AND e.event_code = %s)"""
    return f"""
            SELECT r.trigger_run_json FROM {n["run"]} r
            WHERE r.app_id = %s AND r.executed_at >= %s AND r.executed_at <= %s{where}
            ORDER BY r.executed_at, r.trigger_run_id LIMIT %s"""
