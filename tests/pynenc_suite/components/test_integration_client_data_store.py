"""pynenc's own integration.test_client_data_store suite, unmodified, against
PostgresClientDataStore."""

from pynenc_tests.integration.test_client_data_store.all_tests import *
