"""Retention: the policy, the one purge every way of purging uses, and the scheduled run.

* :mod:`.policy`: the settings (``postgres_retention``, ``postgres_retention_by_status``,
  ``postgres_retention_interval``) and durations;
* :mod:`.purge`: removes invocations from every component's tables in short batches
  (``pynenc-postgres purge``, the scheduled run, and each component's ``purge()``);
* :mod:`.scheduled`: one runner of the cluster applies the policy once per interval.
"""

from pynenc_postgres.retention.policy import (
    RetentionPolicy,
    final_statuses,
    parse_duration,
    parse_statuses,
)
from pynenc_postgres.retention.purge import (
    KEPT_TABLES,
    PURGED_TABLES,
    PurgeReport,
    Scope,
    purge_app,
    purge_batch,
    purge_invocations,
    run_purge,
)

__all__ = [
    "KEPT_TABLES",
    "PURGED_TABLES",
    "PurgeReport",
    "RetentionPolicy",
    "Scope",
    "final_statuses",
    "parse_duration",
    "parse_statuses",
    "purge_app",
    "purge_batch",
    "purge_invocations",
    "run_purge",
]
