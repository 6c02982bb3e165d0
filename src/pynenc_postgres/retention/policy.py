"""The retention policy: how long finished invocations are kept, and how often it applies.

Three settings of the orchestrator's configuration make the policy:

* ``postgres_retention``: how long a finished invocation is kept, a duration such as
  ``14d``, ``6h`` or ``30s`` (units ``s``, ``m``, ``h``, ``d``, ``w``). Empty (the
  default) keeps everything: nobody loses audit data unless someone decided so.
* ``postgres_retention_by_status``: per-status windows that replace it for those
  statuses, comma-separated ``status=duration`` pairs, e.g. ``failed=30d,success=7d``.
  A status named here is purged even when ``postgres_retention`` is empty; ``keep``
  instead of a duration keeps that status forever (``failed=keep``). Only pynenc's
  final statuses may be named: retention never removes work in flight.
* ``postgres_retention_interval``: how often the cluster applies the policy (default
  ``1h``); one runner of the cluster runs each interval's retention.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from pynenc.invocation.status import InvocationStatus

from pynenc_postgres.db.errors import PostgresConfigError

_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
KEEP = "keep"
"""The word that keeps a status forever in ``postgres_retention_by_status``."""


def parse_duration(text: str) -> timedelta:
    """Parse ``30d``, ``12h``, ``90m``, ``45s`` or ``2w`` into a timedelta.

    :param text: a whole number followed by one unit: s, m, h, d or w.
    :raises PostgresConfigError: the text is not of that form.
    """
    match = _DURATION.match(text.lower())
    if not match:
        raise PostgresConfigError(
            f"Cannot read the duration {text!r}. Use a whole number and a unit: "
            "45s, 90m, 12h, 30d or 2w."
        )
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_statuses(names: Iterable[str]) -> tuple[str, ...]:
    """Validate status names (any case) against pynenc's statuses.

    :param names: e.g. ``["FAILED", "success"]``.
    :raises PostgresConfigError: a name is not a pynenc status.
    """
    valid = {status.value for status in InvocationStatus}
    statuses = []
    for name in names:
        value = name.strip().lower()
        if value not in valid:
            raise PostgresConfigError(
                f"{name!r} is not a pynenc invocation status. Use one of: "
                f"{', '.join(sorted(valid))}."
            )
        statuses.append(value)
    return tuple(dict.fromkeys(statuses))


def final_statuses() -> tuple[str, ...]:
    """pynenc's final statuses, the default scope of a purge."""
    return tuple(sorted(status.value for status in InvocationStatus.get_final_statuses()))


def render_duration(window: timedelta) -> str:
    """``window`` in the largest unit that divides it: ``14d``, ``90m``, ``30s``."""
    seconds = int(window.total_seconds())
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each final status is kept, and how often the policy is applied.

    :param windows: final status -> how long an invocation in it is kept once its status
        was recorded. A final status missing here is kept forever.
    :param interval: time between two scheduled runs of the cluster.
    """

    windows: tuple[tuple[str, timedelta], ...]
    interval: timedelta

    @property
    def enabled(self) -> bool:
        """True when some status is ever purged."""
        return bool(self.windows)

    def groups(self) -> list[tuple[timedelta, tuple[str, ...]]]:
        """The statuses that share a window, shortest window first: one pass each."""
        by_window: dict[timedelta, list[str]] = {}
        for status, window in self.windows:
            by_window.setdefault(window, []).append(status)
        return [(window, tuple(sorted(by_window[window]))) for window in sorted(by_window)]

    def describe(self) -> str:
        """The policy as one line, e.g. ``failed=30d, success=7d``; ``keep everything``."""
        if not self.windows:
            return "keep everything"
        return ", ".join(f"{s}={render_duration(w)}" for s, w in sorted(self.windows))

    @classmethod
    def parse(cls, retention: str, by_status: str, interval: str) -> RetentionPolicy:
        """Read the three settings.

        :param retention: ``postgres_retention``: a duration, or empty to keep everything.
        :param by_status: ``postgres_retention_by_status``: ``status=duration`` pairs,
            comma-separated; ``keep`` as the duration keeps that status.
        :param interval: ``postgres_retention_interval``: a duration of at least 1 second.
        :raises PostgresConfigError: a setting cannot be read; the message names it.
        """
        finals = final_statuses()
        windows: dict[str, timedelta | None] = {}
        if retention.strip():
            default = _setting_duration("postgres_retention", retention)
            windows = dict.fromkeys(finals, default)
        for pair in (p for p in by_status.split(",") if p.strip()):
            name, sep, value = pair.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise PostgresConfigError(
                    f"postgres_retention_by_status: cannot read {pair.strip()!r}. Write "
                    "status=duration pairs separated by commas, e.g. "
                    "'failed=30d,success=7d' ('keep' as the duration keeps a status)."
                )
            (status,) = parse_statuses([name])
            if status not in finals:
                raise PostgresConfigError(
                    f"postgres_retention_by_status names {status!r}, which is not a final "
                    f"status: retention only removes finished invocations ({', '.join(finals)})."
                )
            windows[status] = (
                None
                if value.strip().lower() == KEEP
                else _setting_duration(f"postgres_retention_by_status ({status})", value)
            )
        every = _setting_duration("postgres_retention_interval", interval)
        if every < timedelta(seconds=1):
            raise PostgresConfigError(
                f"postgres_retention_interval is {interval!r}; use at least 1s (e.g. 1h)."
            )
        kept = tuple(sorted((s, w) for s, w in windows.items() if w is not None))
        return cls(windows=kept, interval=every)


def _setting_duration(setting: str, text: str) -> timedelta:
    try:
        return parse_duration(text)
    except PostgresConfigError as exc:
        raise PostgresConfigError(f"{setting}: {exc}") from None
