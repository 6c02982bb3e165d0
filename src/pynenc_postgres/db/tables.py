"""Names of the schema's tables, without importing SQLAlchemy's ORM.

The models (:mod:`pynenc_postgres.db.models`) name their tables with these constants;
the hot path's SQL uses them too, so a freshly spawned runner process does not pay for
building the declarative models just to learn a table name.
"""

INVOCATION = "pynenc_invocation"
INVOCATION_HISTORY = "pynenc_invocation_history"
INVOCATION_RESULT = "pynenc_invocation_result"
INVOCATION_EXCEPTION = "pynenc_invocation_exception"
RUNNER_CONTEXT = "pynenc_runner_context"
APP_INFO = "pynenc_app_info"
WORKFLOW_RUN = "pynenc_workflow_run"
WORKFLOW_DATA = "pynenc_workflow_data"
WORKFLOW_SUB_INVOCATION = "pynenc_workflow_sub_invocation"
# Running totals of history rows per status, kept by a trigger (migration 0009).
HISTORY_COUNTER = "pynenc_history_counter"

# The broker's queue and the client data store, each one table.
BROKER_MESSAGE = "pynenc_broker_message"
CLIENT_DATA = "pynenc_client_data"

VERSION_TABLE = "pynenc_alembic_version"

# The state backend's tables, which PostgresStateBackend owns and purges.
STATE_TABLES = (
    INVOCATION_HISTORY,
    INVOCATION_RESULT,
    INVOCATION_EXCEPTION,
    WORKFLOW_SUB_INVOCATION,
    WORKFLOW_DATA,
    WORKFLOW_RUN,
    INVOCATION,
    RUNNER_CONTEXT,
    APP_INFO,
    HISTORY_COUNTER,
)

TRIGGER_CONDITION = "pynenc_trigger_condition"
TRIGGER_SOURCE_TASK_CONDITION = "pynenc_trigger_source_task_condition"
TRIGGER_DEFINITION = "pynenc_trigger_definition"
TRIGGER_DEFINITION_CONDITION = "pynenc_trigger_definition_condition"
TRIGGER_VALID_CONDITION = "pynenc_trigger_valid_condition"
TRIGGER_CRON_EXECUTION = "pynenc_trigger_cron_execution"
TRIGGER_RUN_CLAIM = "pynenc_trigger_run_claim"
TRIGGER_EVENT = "pynenc_trigger_event"
TRIGGER_EVENT_INVOCATION = "pynenc_trigger_event_invocation"
TRIGGER_RUN = "pynenc_trigger_run"
TRIGGER_RUN_PARTICIPANT = "pynenc_trigger_run_participant"

# The trigger's tables, which PostgresTrigger (not the state backend) owns and purges.
TRIGGER_TABLES = (
    TRIGGER_CONDITION,
    TRIGGER_SOURCE_TASK_CONDITION,
    TRIGGER_DEFINITION,
    TRIGGER_DEFINITION_CONDITION,
    TRIGGER_VALID_CONDITION,
    TRIGGER_CRON_EXECUTION,
    TRIGGER_RUN_CLAIM,
    TRIGGER_EVENT,
    TRIGGER_EVENT_INVOCATION,
    TRIGGER_RUN,
    TRIGGER_RUN_PARTICIPANT,
)

# The orchestrator's tables, which PostgresOrchestrator owns and purges.
ORCHESTRATOR_INVOCATION = "pynenc_orchestrator_invocation"
ORCHESTRATOR_ARGUMENT = "pynenc_orchestrator_argument"
ORCHESTRATOR_WAITING = "pynenc_orchestrator_waiting"
RUNNER_HEARTBEAT = "pynenc_runner_heartbeat"
ATOMIC_SERVICE_EXECUTION = "pynenc_atomic_service_execution"
ORCHESTRATOR_TABLES = (
    ORCHESTRATOR_INVOCATION,
    ORCHESTRATOR_ARGUMENT,
    ORCHESTRATOR_WAITING,
    RUNNER_HEARTBEAT,
    ATOMIC_SERVICE_EXECUTION,
)

# Retention's schedule and the record of its runs (migration 0010).
RETENTION_SCHEDULE = "pynenc_retention_schedule"
RETENTION_RUN = "pynenc_retention_run"
RETENTION_TABLES = (RETENTION_SCHEDULE, RETENTION_RUN)

# Views created by migrations. They are not modelled, so whatever must tell our objects
# from an application's (pynenc_postgres.autogenerate) learns their names here.
INVOCATION_STATUS_VIEW = "pynenc_invocation_status"
INVOCATION_TIMELINE_VIEW = "pynenc_invocation_timeline"
RUNNER_STATUS_VIEW = "pynenc_runner_status"
VIEWS: tuple[str, ...] = (INVOCATION_STATUS_VIEW, INVOCATION_TIMELINE_VIEW, RUNNER_STATUS_VIEW)

# Every table and view pynenc-postgres creates, now or in a later migration, is named
# with this prefix: it is reserved for pynenc-postgres in the schema that holds them.
NAME_PREFIX = "pynenc_"
