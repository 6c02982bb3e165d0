"""pynenc's own unit.orchestrator suite, unmodified, on the Postgres-only stack."""

from pynenc_tests.unit.orchestrator.all_tests import *
