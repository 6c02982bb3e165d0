"""pynenc's own integration.state_backend suite, unmodified, on the Postgres-only stack."""

from pynenc_tests.integration.state_backend.all_tests import *
