"""A rule's state machine, with no I/O.

::

    ok ──condition true──► pending ──still true after for_minutes──► firing
     ▲                        │                                        │
     └──── false: cleared ────┘◄────────── false: resolved ────────────┘

``for_minutes`` 0 goes from ok to firing at once. No data (``holds`` is None) changes
nothing: a pending rule keeps counting from when its condition first held, a firing one keeps
firing until its figure is seen to recover. A disabled rule goes back to ok (a firing one
resolving, so that receivers close the alert). Only ``firing`` and ``resolved`` notify.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

HeldState = Literal["ok", "pending", "firing"]
DisplayState = Literal["ok", "pending", "firing", "no_data"]
EventStatus = Literal["pending", "firing", "resolved", "cleared"]
Condition = Literal[">", ">=", "<", "<="]
NOTIFYING: frozenset[EventStatus] = frozenset({"firing", "resolved"})

_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def holds(value: float | None, condition: str, threshold: float) -> bool | None:
    """Whether ``value`` meets the condition; None when there is no value."""
    return None if value is None else _COMPARISONS[condition](value, threshold)


@dataclass(frozen=True)
class Step:
    state: HeldState
    since: datetime  # when ``state`` was entered
    event: EventStatus | None  # the transition made, if any


def advance(
    state: HeldState,
    since: datetime,
    condition_holds: bool | None,
    now: datetime,
    for_minutes: int,
    enabled: bool = True,
) -> Step:
    """Where a rule in ``state`` (entered at ``since``) goes after an evaluation at ``now``."""
    if not enabled or condition_holds is False:
        if state == "firing":
            return Step("ok", now, "resolved")
        if state == "pending":
            return Step("ok", now, "cleared")
        return Step(state, since, None)
    if condition_holds is None:
        return Step(state, since, None)
    if state == "ok":
        if for_minutes == 0:
            return Step("firing", now, "firing")
        return Step("pending", now, "pending")
    if state == "pending" and now - since >= timedelta(minutes=for_minutes):
        return Step("firing", now, "firing")
    return Step(state, since, None)


def display_state(state: HeldState, no_data: bool) -> DisplayState:
    return "no_data" if no_data else state
