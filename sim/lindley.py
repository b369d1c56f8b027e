"""Lindley's recursion, the one rule behind every first-come-first-served queue in the engine.

For a FCFS server, W(n+1) = max(0, W(n) + S(n) - A(n+1)) (waiting time of job n+1; S service,
A inter-arrival). In absolute times: a job arriving at `now_s` starts when the server frees or
now, whichever is later, and frees it again at start + service. Since the start is known on
arrival, each FCFS job costs one SimPy event. Used by the FIFO GPU server (sim/server/fifo.py),
the per-client edge devices (sim/edge.py) and the FIFO link (sim/network.py).
"""

from __future__ import annotations


def lindley_start(free_s: float, now_s: float) -> float:
    """Start time of a job arriving at `now_s` at a FCFS server that frees at `free_s`."""
    return free_s if free_s > now_s else now_s
