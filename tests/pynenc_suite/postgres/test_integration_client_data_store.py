"""pynenc's own integration.test_client_data_store suite, unmodified, on the Postgres-only stack."""

from pynenc_tests.integration.test_client_data_store.all_tests import *
