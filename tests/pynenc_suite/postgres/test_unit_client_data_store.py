"""pynenc's own unit.client_data_store suite, unmodified, on the Postgres-only stack."""

from pynenc_tests.unit.client_data_store.all_tests import *
