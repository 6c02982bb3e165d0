"""pynenc's own unit.trigger suite, unmodified, on the Postgres-only stack."""

from pynenc_tests.unit.trigger.all_tests import *
