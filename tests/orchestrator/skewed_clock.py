"""Skew this process's Python clock by ``PYNENC_TEST_CLOCK_SKEW_SECONDS``.

Imported first by a child process, before pynenc: ``time.time``, ``time.time_ns`` and
``datetime.datetime.now`` / ``utcnow`` / ``today`` then run that many seconds ahead (or
behind, when negative), as on a host whose clock is off. The database server's clock
is untouched.
"""

from __future__ import annotations

import datetime as _datetime
import os
import time as _time
from typing import Any

SKEW_SECONDS = float(os.environ["PYNENC_TEST_CLOCK_SKEW_SECONDS"])
_SKEW = _datetime.timedelta(seconds=SKEW_SECONDS)
_real_time = _time.time
_real_time_ns = _time.time_ns
_RealDatetime = _datetime.datetime


def _skewed_time() -> float:
    return _real_time() + SKEW_SECONDS


def _skewed_time_ns() -> int:
    return _real_time_ns() + int(SKEW_SECONDS * 1_000_000_000)


class _SameAsDatetime(type):
    """Real datetimes stay instances of the replacement class, for isinstance checks."""

    def __instancecheck__(cls, instance: Any) -> bool:
        return isinstance(instance, _RealDatetime)

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, _RealDatetime)


class SkewedDatetime(_RealDatetime, metaclass=_SameAsDatetime):
    """``datetime.datetime`` whose clock readings are skewed; values are real datetimes."""

    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return _RealDatetime.now(tz) + _SKEW

    @classmethod
    def utcnow(cls) -> Any:
        return _RealDatetime.now(_datetime.UTC).replace(tzinfo=None) + _SKEW

    @classmethod
    def today(cls) -> Any:
        return _RealDatetime.now() + _SKEW


_time.time = _skewed_time
_time.time_ns = _skewed_time_ns
_datetime.datetime = SkewedDatetime  # type: ignore[misc]
