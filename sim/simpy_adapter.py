"""The only place the engine reaches into SimPy's internals, and why.

A PS link (sim/network.py) learns *when* a transfer ends only after processes already wait on
that transfer's event. SimPy's public API can trigger an event now (`Event.succeed`) or create a
new one at a delay (`Timeout`), but not trigger an existing event at a delay. Doing it through a
Timeout plus a callback costs a second event per transfer on the link's hottest path, so
`succeed_after` does what `Event.succeed` does (simpy/events.py: set `_ok` and `_value`, then
`env.schedule`) with a delay. `check_assumptions` verifies, on the installed SimPy, every fact
this relies on; tests/test_simpy_adapter.py runs it, so an upgrade that breaks them fails loudly
(pyproject.toml pins the range it was checked on).
"""

from __future__ import annotations

import simpy
from simpy.events import NORMAL, PENDING, Event

#: The SimPy versions `check_assumptions` was verified on (kept in step with pyproject.toml).
SUPPORTED = ((4, 1), (4, 2))  # >= 4.1, < 4.2


def succeed_after(event: Event, delay_s: float) -> None:
    """Trigger the untriggered `event` with value None `delay_s` from now: `Event.succeed`, delayed."""
    event._ok = True
    event._value = None
    event.env.schedule(event, NORMAL, delay_s)


def check_assumptions() -> None:
    """Raise AssertionError unless the installed SimPy behaves as `succeed_after` assumes."""
    version = tuple(int(p) for p in simpy.__version__.split(".")[:2])
    assert SUPPORTED[0] <= version < SUPPORTED[1], f"simpy {simpy.__version__} is outside the checked range"
    env = simpy.Environment()
    ev = Event(env)
    assert ev._value is PENDING and not ev.triggered, "a new Event is no longer PENDING in `_value`"
    seen = []

    def waiter():
        value = yield ev
        seen.append((env.now, value))

    def trigger():
        yield env.timeout(1.0)
        succeed_after(ev, 2.5)
        assert ev.triggered and ev.ok, "setting `_ok` / `_value` no longer marks an Event triggered"

    env.process(waiter())
    env.process(trigger())
    env.run()
    assert seen == [(3.5, None)], f"succeed_after did not wake the waiter at t=3.5 with None: {seen}"
    ev2 = Event(env)
    ev2.succeed()  # the public path still schedules through env.schedule at priority NORMAL
    assert env.peek() == env.now and env._queue[0][1] == NORMAL and env._queue[0][3] is ev2, \
        "env.schedule's queue entry is no longer (time, priority, id, event)"
