"""pynenc's own integration.combinations suite, unmodified, against PostgresStateBackend."""

from pynenc_tests.integration.combinations.all_tests import *
