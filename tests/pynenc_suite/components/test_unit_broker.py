"""pynenc's own unit.broker suite, unmodified, against PostgresBroker."""

from pynenc_tests.unit.broker.all_tests import *
