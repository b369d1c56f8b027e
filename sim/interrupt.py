"""Ctrl-C during a run: stop the simulation between two events, so the outputs stay consistent.

Python raises KeyboardInterrupt wherever the main thread happens to be. Inside a SimPy process
that would kill one request half-way (SimPy turns the exception into a failed process), and
inside the event log's flush it could lose rows. So while a run is active, the first SIGINT only
schedules an event at the current simulated time whose callback raises `SimulationInterrupted`
out of `env.run()`, between two events. The runner then writes what it has and marks the summary
`"complete": false`. A second Ctrl-C gets Python's default behaviour (immediate KeyboardInterrupt).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from pathlib import Path

import simpy


class SimulationInterrupted(Exception):
    """Raised out of `env.run()` at a clean point after the user pressed Ctrl-C."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C after writing its partial outputs (summary `complete: false`)."""

    def __init__(self, out_dir: Path | None, sim_time_s: float, result=None):
        super().__init__(f"interrupted at simulated time {sim_time_s:.3f} s")
        self.out_dir = out_dir
        self.sim_time_s = sim_time_s
        self.result = result


def _raise(_event) -> None:
    raise SimulationInterrupted()


@contextmanager
def stop_on_sigint(env: simpy.Environment):
    """While active (main thread, default SIGINT handler only), Ctrl-C stops `env.run()` cleanly."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts at once
        stop = env.event()
        stop.callbacks.append(_raise)
        stop.succeed()

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def discount_future_work(components: dict, sim, now_s: float) -> None:
    """Fix utilisation in the component stats of a run stopped at `now_s`.

    Links and servers count a job's whole service when they schedule it, which is exact once the
    run has drained but, at an interrupt, counts work queued past the stop. Each component's
    `busy_fraction_until(now_s)` (sim/interfaces.py) gives the busy share of [0, now_s] without the
    work booked past it where it knows that (FIFO links and servers); elsewhere utilisation is None.
    """
    for name, comp in (("uplink", sim.uplink), ("downlink", sim.downlink), ("gpu", sim.server)):
        stats = components.get(name)
        if stats is None or now_s <= 0:
            continue
        stats["utilisation"] = comp.busy_fraction_until(now_s)
