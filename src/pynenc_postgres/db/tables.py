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
BROKER_MESSAGE = "pynenc_broker_message"
CLIENT_DATA = "pynenc_client_data"

VERSION_TABLE = "pynenc_alembic_version"
