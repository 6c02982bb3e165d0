"""pynenc's own integration.broker suite, unmodified, against PostgresBroker."""

from pynenc_tests.integration.broker.all_tests import *
