"""pynenc's own integration.pynmon suite, unmodified, on the Postgres-only stack."""

from pynenc_tests.integration.pynmon.all_tests import *
