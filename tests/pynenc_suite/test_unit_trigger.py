"""pynenc's own unit.trigger suite, unmodified, against PostgresTrigger."""

from pynenc_tests.unit.trigger.all_tests import *

from tests.pynenc_suite.trigger_app import app_instance
