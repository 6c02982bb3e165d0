"""The app of the cron test's runner processes (tests/trigger/test_cron_runners.py).

Built from ``PYNENC__*`` environment variables alone, as a runner on another host
would be: the trigger is resolved by name (``PostgresTrigger``) through the
``pynenc.plugins`` entry point.
"""

from __future__ import annotations

from pynenc import Pynenc
from pynenc.trigger.trigger_builder import on_cron

app = Pynenc()


@app.task(triggers=on_cron("* * * * *"))
def every_minute() -> str:
    return "tick"
