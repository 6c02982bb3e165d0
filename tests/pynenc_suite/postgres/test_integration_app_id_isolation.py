"""pynenc's own integration.app_id_isolation suite, unmodified, on the Postgres-only stack."""

from pynenc_tests.integration.app_id_isolation.all_tests import *
