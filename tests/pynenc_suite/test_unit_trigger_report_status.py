"""``test_report_task_status`` with the ``trigger`` fixture of its own module.

Through ``all_tests`` the test gets the ``trigger`` fixture of another module, which
does not bind the ``add`` task to the app under test, so the invocation it reports on
is never stored and it fails the same way on pynenc's memory and SQLite stacks. With
its own module's fixture, which binds ``add``, it runs as intended, here on
PostgresTrigger.
"""

from pynenc_tests.unit.trigger.test_trigger_all_instances import (
    test_report_task_status,
    trigger,
)

from tests.pynenc_suite.trigger_app import app_instance
