"""pynenc's own integration.combinations suite, unmodified, on the Postgres-only stack
with every runner."""

from pynenc_tests.integration.combinations.all_tests import *
