"""pynenc's own integration.broker suite, unmodified, on the Postgres-only stack."""

from pynenc_tests.integration.broker.all_tests import *
