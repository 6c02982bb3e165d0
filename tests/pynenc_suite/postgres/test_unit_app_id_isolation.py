"""pynenc's own unit.app_id_isolation suite, unmodified, on the Postgres-only stack."""

from pynenc_tests.unit.app_id_isolation.all_tests import *
