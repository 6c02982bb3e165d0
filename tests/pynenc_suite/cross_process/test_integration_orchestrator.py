"""pynenc's own integration.orchestrator suite, unmodified, against PostgresStateBackend."""

from pynenc_tests.integration.orchestrator.all_tests import *
