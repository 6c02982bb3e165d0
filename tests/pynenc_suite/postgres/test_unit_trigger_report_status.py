"""``test_report_task_status`` with the ``trigger`` fixture of its own module.

Through ``all_tests`` the test gets another module's ``trigger`` fixture, which does not
bind ``add`` to the app under test (docs/compatibility.md); its own module's fixture
does, so here it runs as intended on the Postgres-only stack.
"""

from pynenc_tests.unit.trigger.test_trigger_all_instances import (
    test_report_task_status,
    trigger,
)
