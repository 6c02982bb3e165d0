"""pynenc's own integration.app_id_isolation suite, unmodified, against PostgresStateBackend."""

from pynenc_tests.integration.app_id_isolation.all_tests import *
