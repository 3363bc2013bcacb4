"""Cron expressions as Dagster schedules take them: five fields or an ``@`` shortcut.

Checked when the configuration loads, so a bad ``refresh_cron`` fails naming its key
rather than when the schedule is built. croniter reads the fields (the same dialect
Dagster's schedules read, with ``?``, ``L`` and ``d#n``); asking it for the next firing
also refuses a day that never comes (``0 0 30 2 *``).
"""

from __future__ import annotations

from datetime import datetime

from croniter import CroniterBadDateError, CroniterError, croniter

SHORTCUTS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})


def cron_problem(expression: str) -> str | None:
    """Why ``expression`` is not a usable schedule, or None when it is one."""
    if expression.strip().lower() in SHORTCUTS:
        return None
    fields = expression.split()
    if len(fields) != 5:
        return f"needs five fields (minute hour day month weekday), found {len(fields)}"
    try:
        croniter(expression, datetime(2026, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        return "that day of the month never occurs in those months"
    except (CroniterError, ValueError, KeyError) as exc:
        return str(exc).replace(f"[{expression}] ", "")
    return None
