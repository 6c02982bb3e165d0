"""pynenc's own unit.client_data_store suite, unmodified, against PostgresClientDataStore."""

from pynenc_tests.unit.client_data_store.all_tests import *
