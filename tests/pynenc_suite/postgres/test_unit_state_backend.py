"""pynenc's own unit.state_backend suite, unmodified, on the Postgres-only stack."""

from pynenc_tests.unit.state_backend.all_tests import *
