"""pynenc's own unit.state_backend suite, unmodified, against PostgresStateBackend."""

from pynenc_tests.unit.state_backend.all_tests import *
