"""pynenc's own unit.broker suite, unmodified, on the Postgres-only stack."""

from pynenc_tests.unit.broker.all_tests import *
