"""pynenc's own integration.orchestrator suite, unmodified, on the Postgres-only stack."""

from pynenc_tests.integration.orchestrator.all_tests import *
