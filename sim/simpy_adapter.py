"""The only place the engine reaches into SimPy's internals, and why.

A PS link (sim/network.py) learns *when* a transfer ends only after processes already wait on
that transfer's event. SimPy's public API can trigger an event now (`Event.succeed`) or create a
new one at a delay (`Timeout`), but not trigger an existing event at a delay. Doing it through a
Timeout plus a callback costs a second event per transfer on the link's hottest path, so
`succeed_after` does what `Event.succeed` does (simpy/events.py: set `_ok` and `_value`, then
`env.schedule`) with a delay. `check_assumptions` verifies, on the installed SimPy, every fact
this relies on; tests/test_engine_interfaces.py runs it, so an upgrade that breaks them fails
loudly (pyproject.toml pins the range it was checked on).

Two more shortcuts serve the per-request hot path (issue 26), each equivalent to the public API
for the event order:
- `start(generator)` drives a request's protocol like `env.process` does, minus the two events a
  `Process` costs (its `Initialize` at the start, its own end event that nobody waits on): the
  generator runs at once up to its first yield, as the `Initialize` (URGENT) would have run it
  right after the current event; so a caller starts it as the last thing of its step (as the
  arrival processes do). Nothing may wait on or interrupt such a process.
- `run(env)` is `env.run()` with `env.step` inlined into the loop.
- `timeout(env, delay_s)` is `Timeout(env, delay_s)` (value None) with `Timeout.__init__` and
  `env.schedule` inlined: the protocols make several per request.
- The per-request code (policies' protocol steps, links, the FIFO server, the engine) reads the clock
  as `env._now`, what the `env.now` property returns, without the property call (about a million
  calls per 100k requests).
"""

from __future__ import annotations

import simpy
from heapq import heappop, heappush


from simpy.events import NORMAL, PENDING, Event, Timeout

#: The SimPy versions `check_assumptions` was verified on (kept in step with pyproject.toml).
SUPPORTED = ((4, 1), (4, 2))  # >= 4.1, < 4.2


def succeed_after(event: Event, delay_s: float) -> None:
    """Trigger the untriggered `event` with value None `delay_s` from now: `Event.succeed`, delayed."""
    event._ok = True
    event._value = None
    event.env.schedule(event, NORMAL, delay_s)


class _Delay(Timeout):
    """A Timeout made by `timeout`, whose value is always None."""

    _ok = True
    _value = None


def timeout(env: simpy.Environment, delay_s: float) -> Timeout:
    """`Timeout(env, delay_s)` in one call: the same event, scheduled the same way."""
    if delay_s < 0:
        raise ValueError(f"Negative delay {delay_s}")
    event = object.__new__(_Delay)
    event.env = env
    event.callbacks = []
    event._delay = delay_s
    heappush(env._queue, (env._now + delay_s, NORMAL, next(env._eid), event))
    return event


class _Driver:
    """Resumes one generator whenever the event it yielded is processed (`Process._resume`, lean)."""

    __slots__ = ("_gen", "_wake")

    def __init__(self, generator):
        self._gen = generator
        self._wake = self._resume  # one bound method, appended to every event it waits on

    def _resume(self, event: Event) -> None:
        gen = self._gen
        while True:
            try:
                if event._ok:
                    event = gen.send(event._value)
                else:  # hand the failure to the generator, as a Process does
                    event._defused = True
                    event = gen.throw(event._value)
            except StopIteration:
                return
            try:
                callbacks = event.callbacks
            except AttributeError:
                raise RuntimeError(f"invalid yield value {event!r} in {gen!r}") from None
            if callbacks is not None:  # not processed yet: wait for it
                callbacks.append(self._wake)
                return


class _Started:
    """The value `_Driver` sends first: an already-processed, successful event holding None."""

    _ok = True
    _value = None


def start(generator) -> None:
    """Run `generator` as a SimPy process that nobody waits on: its first step runs now."""
    _Driver(generator)._resume(_Started)


def run(env: simpy.Environment) -> None:
    """`env.run()` with no `until`: process events until none is left (`Environment.step`, inlined)."""
    queue = env._queue
    while queue:
        env._now, _, _, event = heappop(queue)
        callbacks, event.callbacks = event.callbacks, None
        for callback in callbacks:
            callback(event)
        if not event._ok and not hasattr(event, "_defused"):
            exc = type(event._value)(*event._value.args)
            exc.__cause__ = event._value
            raise exc


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
    assert env._now == env.now and simpy.Environment(initial_time=2.5)._now == 2.5, \
        "`Environment.now` no longer returns `_now`"
    env3, fired = simpy.Environment(), []
    for k, make in enumerate((timeout, Timeout, timeout, Timeout)):  # equal times: creation order
        make(env3, 1.0 if k < 3 else 0.5).callbacks.append(lambda e, k=k: fired.append((env3.now, k, e.value)))
    env3.run()
    assert fired == [(0.5, 3, None), (1.0, 0, None), (1.0, 1, None), (1.0, 2, None)], \
        f"`timeout` and `Timeout` no longer fire alike: {fired}"
