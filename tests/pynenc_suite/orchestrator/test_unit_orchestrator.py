"""pynenc's own unit.orchestrator suite, unmodified, against PostgresOrchestrator."""

from pynenc_tests.unit.orchestrator.all_tests import *
