"""pynenc's own unit.app_id_isolation suite, unmodified, against PostgresStateBackend."""

from pynenc_tests.unit.app_id_isolation.all_tests import *
