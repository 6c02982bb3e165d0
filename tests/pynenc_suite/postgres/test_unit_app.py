"""pynenc's own unit.app suite, unmodified, on the Postgres-only stack."""

from pynenc_tests.unit.app.all_tests import *
