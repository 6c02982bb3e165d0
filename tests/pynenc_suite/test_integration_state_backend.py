"""pynenc's own integration.state_backend suite, unmodified, against PostgresStateBackend."""

from pynenc_tests.integration.state_backend.all_tests import *
