"""A reference for the PS link (sim/network.py `PsLink`): max-min fair processor sharing, by brute force.

Short and slow on purpose, so it can be checked by reading: it steps from one change to the next
(an arrival, a finish, a step of the capacity trace or of a client's access trace) and, on each
piece, gives every active transfer its water-filling rate. tests/test_ps_reference.py requires
`PsLink` to produce the same finish times on random workloads. Not used by the simulator.

Water-filling (max-min fairness with caps): visit transfers by increasing cap; each gets
min(its cap, the capacity left / the transfers left). A trace is read 1 ns past the piece's start
(as `PsLink` does, `EPS_S`), so a step exactly at a piece boundary counts as taken.

On a Mahimahi trace (capacity delivered in packet bursts) with no caps in force, `PsLink`
integrates the trace's cumulative capacity exactly: `ps_finish_times_bursty` is the reference for
that, equal sharing in the trace's own bit clock.
"""

from __future__ import annotations

import math

from edgevlm.sim.bandwidth import ConstantProfile

#: Read traces this far past a piece's start (PsLink's EPS_S).
READ_AFTER_S = 1e-9
#: A transfer with at most this many bits left at the end of a piece has finished.
DONE_BITS = 1e-6


def water_fill(capacity_bps: float, caps_bps: dict) -> dict:
    """Max-min fair rates: transfer -> min(cap, fair share of what the smaller caps leave)."""
    rates, remaining, left = {}, capacity_bps, len(caps_bps)
    for i in sorted(caps_bps, key=lambda j: caps_bps[j]):
        rates[i] = min(caps_bps[i], remaining / left)
        remaining -= rates[i]
        left -= 1
    return rates


def _cap(access, t: float) -> float:
    if access is None:
        return math.inf
    if isinstance(access, (int, float)):
        return float(access)
    return access.rate_at(t)


def _next_change(access, t: float) -> float:
    return math.inf if access is None or isinstance(access, (int, float)) else access.next_change(t)


def ps_finish_times(arrivals_s: list[float], sizes_bits: list[float], access: list, capacity) -> list[float]:
    """Finish time of each transfer (input order) on a PS link of `capacity` (a profile from
    sim/bandwidth.py, read as piecewise constant); `access[i]` is None, a cap in bit/s or a profile."""
    n = len(arrivals_s)
    order = sorted(range(n), key=lambda i: (arrivals_s[i], i))
    finish = [math.nan] * n
    left: dict[int, float] = {}
    t, k = 0.0, 0
    while k < n or left:
        if not left:
            t = max(t, arrivals_s[order[k]])
        while k < n and arrivals_s[order[k]] <= t:
            left[order[k]] = float(sizes_bits[order[k]])
            k += 1
        probe = t + READ_AFTER_S
        rates = water_fill(capacity.rate_at(probe), {i: _cap(access[i], probe) for i in left})
        ends = [arrivals_s[order[k]] if k < n else math.inf, capacity.next_change(probe)]
        ends += [_next_change(access[i], probe) for i in left]
        ends += [t + left[i] / r for i, r in rates.items() if r > 0]
        t_next = min(ends)
        for i, r in rates.items():
            left[i] -= r * (t_next - t)
        t = t_next
        for i in [i for i, bits in left.items() if bits <= DONE_BITS]:
            finish[i] = t
            del left[i]
    return finish


def ps_finish_times_bursty(arrivals_s: list[float], sizes_bits: list[float], capacity) -> list[float]:
    """Uncapped transfers on any trace: equal sharing of the trace's cumulative capacity. In the
    bit clock c = capacity.cum_bits(t) the link serves one bit per bit, so this is PS at rate 1 on
    the arrivals' clock readings, mapped back by `capacity.time_at`."""
    clock = [capacity.cum_bits(a) for a in arrivals_s]
    done = ps_finish_times(clock, sizes_bits, [None] * len(clock), ConstantProfile(1.0))
    return [max(a, capacity.time_at(c)) for a, c in zip(arrivals_s, done)]
