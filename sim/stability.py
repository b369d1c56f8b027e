"""Is a run in steady state? Served vs offered rate, and whether the backlog grows over the run.

An overloaded queue has no steady state: its latency grows with the run length, so a mean with a
confidence interval describes the horizon, not the system. Over the measurement window (warm-up
to last arrival), cut into `N_BATCHES` equal time slices, we count arrivals a_k and departures d_k
(requests that ended: answered, dropped or expired). The backlog N(t) = arrivals - departures so far.

A run is UNSTABLE when all three hold:
- the departure deficit is significant: the 95% batch-means CI of (d_k - a_k) per second lies below 0;
- it is material: departures fall short of arrivals by more than `MIN_DEFICIT` (2 %) of the offered rate;
- the backlog grows: its mean over the last third of the window exceeds that over the first third.
In a stable queue sum(d_k - a_k) telescopes to N(end) - N(start), a bounded quantity, so the batch
differences are negatively correlated and the t interval is conservative: a stable run is rarely
flagged (tests/test_stability.py checks long runs at rho = 0.9). Too few arrivals to form the batches
gives `stable: null` (undecided), never a guess.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import special  # stdtrit is stats.t.ppf's own kernel, without importing scipy.stats (~1 s)

N_BATCHES = 30
#: Departures below arrivals by more than this share of the offered rate count as material.
MIN_DEFICIT = 0.02
#: At least this many arrivals per batch on average before a verdict is given.
MIN_ARRIVALS_PER_BATCH = 2
UNSTABLE_NOTE = "UNSTABLE: queue grows; latency figures depend on run length"


def assess(arrival_s: np.ndarray, done_s: np.ndarray, window_s: tuple[float, float]) -> dict[str, Any]:
    """The stability verdict with its evidence, from every request's arrival and end time (NaN: no end yet).

    Returns {"stable": True | False | None, "offered_per_s", "served_per_s", "served_ratio",
    "deficit_per_s_ci95", "backlog": {start, end, mean_first_third, mean_last_third}, "reason"}.
    """
    lo, hi = float(window_s[0]), float(window_s[1])
    arrival = np.asarray(arrival_s, dtype=np.float64)
    if not (arrival[1:] >= arrival[:-1]).all():  # arrivals in request order are sorted already
        arrival = np.sort(arrival)
    done = np.asarray(done_s, dtype=np.float64)
    done = done[~np.isnan(done)]  # a copy: sorted in place
    done.sort()
    span = hi - lo
    n_arr = int(np.searchsorted(arrival, hi, side="right") - np.searchsorted(arrival, lo, side="left"))
    out: dict[str, Any] = {"stable": None, "offered_per_s": None, "served_per_s": None, "served_ratio": None,
                           "deficit_per_s_ci95": [None, None], "backlog": None, "reason": None}
    if span <= 0 or n_arr < N_BATCHES * MIN_ARRIVALS_PER_BATCH:
        out["reason"] = f"too few arrivals in the window to judge ({n_arr}; need {N_BATCHES * MIN_ARRIVALS_PER_BATCH})"
        return out
    edges = np.linspace(lo, hi, N_BATCHES + 1)
    arrived = np.searchsorted(arrival, edges, side="right").astype(np.float64)
    departed = np.searchsorted(done, edges, side="right").astype(np.float64)
    backlog = arrived - departed
    width = span / N_BATCHES
    net = np.diff(departed - arrived) / width  # departures minus arrivals per second, per slice
    offered = (arrived[-1] - arrived[0]) / span
    served = (departed[-1] - departed[0]) / span
    half = float(special.stdtrit(N_BATCHES - 1, 0.975) * net.std(ddof=1) / math.sqrt(N_BATCHES))
    mean_net = float(net.mean())
    third = (N_BATCHES + 1) // 3
    first, last = float(backlog[:third].mean()), float(backlog[-third:].mean())
    significant = mean_net + half < 0
    material = -mean_net > MIN_DEFICIT * offered
    grows = last > first
    stable = not (significant and material and grows)
    out.update({
        "stable": stable, "offered_per_s": float(offered), "served_per_s": float(served),
        "served_ratio": float(served / offered) if offered > 0 else None,
        "deficit_per_s_ci95": [-(mean_net + half), -(mean_net - half)],
        "backlog": {"start": int(backlog[0]), "end": int(backlog[-1]),
                    "mean_first_third": first, "mean_last_third": last},
        "reason": None if stable else (f"served {served:.3f}/s < offered {offered:.3f}/s and the backlog grew "
                                       f"from {int(backlog[0])} to {int(backlog[-1])} requests"),
    })
    return out


def mark(stable: Any) -> str:
    """The label to print beside an unstable run's figures ('' for stable or undecided runs)."""
    return UNSTABLE_NOTE if stable is False else ""
