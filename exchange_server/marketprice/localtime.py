"""Local calendar arithmetic for day / week / month k-line buckets.

The original uses the host's local time zone (``localtime``/``mktime``).  ``LocalTime()`` does
the same; ``LocalTime(tz)`` uses any ``tzinfo`` instead (a ``zoneinfo.ZoneInfo`` or a fixed
``datetime.timezone``), which is how tests pin the zone.  Bucket starts are always real local
midnights, so zones with daylight-saving changes get 23- and 25-hour days where they occur.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timedelta, tzinfo

EPOCH_DATE = date(1970, 1, 1)
ONE_DAY = timedelta(days=1)


class LocalTime:
    def __init__(self, tz: tzinfo | None = None) -> None:
        self.tz = tz
        self._day_from = 0
        self._day_to = -1

    def date_of(self, ts: float) -> date:
        """The local calendar date of epoch time ``ts``."""
        if self.tz is None:
            t = time.localtime(ts)
            return date(t.tm_year, t.tm_mon, t.tm_mday)
        return datetime.fromtimestamp(ts, self.tz).date()

    def midnight(self, d: date) -> int:
        """Epoch seconds of local 00:00 on date ``d``."""
        if self.tz is None:
            return int(time.mktime((d.year, d.month, d.day, 0, 0, 0, 0, 0, -1)))
        return int(datetime(d.year, d.month, d.day, tzinfo=self.tz).timestamp())

    def day_start(self, ts: int) -> int:
        """Local midnight of the day containing ``ts`` (cached for the current day)."""
        if self._day_from <= ts < self._day_to:
            return self._day_from
        d = self.date_of(ts)
        start = self.midnight(d)
        self._day_from = start
        self._day_to = self.midnight(d + ONE_DAY)
        return start

    def day_index(self, d: date) -> int:
        """Days from 1970-01-01 to ``d``."""
        return (d - EPOCH_DATE).days
