"""KV-cache memory of a continuous-batching replica: its use over time, and vLLM-style on-demand allocation.

Capacity: (accelerator memory x 0.9 - weights) / per-token KV, both from sim/profiles.py (the roofline
computes it: `Roofline.kv_capacity_tokens`); per-token KV = 2 (K and V) x layers x KV width x bytes
per element, e.g. LLaVA-1.5-7B 2·32·4096·2 B = 0.5 MiB. An A100-80GB holds (72 - 14.1) GB / 0.5 MiB
= 110k tokens, about 90 stage-2 requests of ~1,180 tokens; an L4 (24 GB) 14.3k tokens, about 12.
`kv_capacity_tokens` in the scheduler overrides it (what-ifs and theory checks).

A sequence holds its prompt (visual + text tokens) plus each answer token fed back, so at most
prompt + answer - 1 tokens; a stage-2 prompt carries two images' visual tokens.

`ContinuousScheduler.kv_allocation`:
- `reserve` (default, as before): a sequence is admitted only if its final length fits beside the final
  lengths of those running; it is never preempted.
- `on_demand` (vLLM's block manager): a sequence is admitted when its prompt fits beside what the
  running ones hold now plus this iteration's growth; when the running sequences' next tokens do not
  fit, the most recently admitted one is preempted by recomputation (vLLM's default, not swap): its KV
  is freed, it goes back to the head of the queue, and on readmission it prefills its prompt plus the
  tokens it had generated (vision encoder included, codec work not) and carries on.

`kv_block_tokens` (vLLM: 16; default 1, token by token): KV is allocated in whole blocks, so a sequence
of n tokens holds ceil(n / block) blocks, it takes a new block when its last one is full, and the
capacity is floor(capacity / block) whole blocks (an L4: 891 blocks of 16 = 14,256 tokens).
`kv_watermark` (vLLM: 0.01; default 0): an admission must leave that share of the blocks free, so
running sequences can grow into them before anything is preempted (vLLM's `can_allocate`). In
`reserve` mode a final length is reserved in whole blocks under the same watermark. Swapping to host
memory, prefix-block sharing inside the KV pool and chunked prefill are not modelled.

summary.json's gpu.kv has the counters, the peaks and a series of at most SERIES_POINTS bins: the most
KV tokens in use on the fullest replica in each bin and, for `on_demand`, the preemptions in it.
`edgevlm run --audit` also writes server_steps.parquet, one row per iteration (sim/audit.py StepLog),
from which `edgevlm check` verifies the capacity on every step.
"""

from __future__ import annotations

import math

#: At most this many points in the KV-use series of summary.json (bins of whole seconds).
SERIES_POINTS = 120


class KvUse:
    """Counters and the per-second maximum of one replica's KV tokens in use; with `steps` set (a
    sim.audit.StepLog recorder, `edgevlm run --audit`), one record per iteration or batch."""

    __slots__ = ("capacity", "peak", "peak_shared", "peak_seqs", "admitted", "preempted", "recomputed_tokens",
                 "per_s", "preempted_per_s", "steps", "_logged")

    def __init__(self, capacity: float):
        self.capacity = capacity
        self.peak = 0.0
        self.peak_shared = 0.0  # peak while two or more sequences run (a lone oversized one may exceed capacity)
        self.peak_seqs = 0
        self.admitted = 0
        self.preempted = 0
        self.recomputed_tokens = 0
        self.per_s: dict[int, float] = {}
        self.preempted_per_s: dict[int, int] = {}
        #: recorder(end_s, tokens, seqs, admitted, preempted) of each iteration, or None (the default)
        self.steps = None
        self._logged = (0, 0)  # admitted, preempted as of the last recorded iteration

    def preempt(self, now_s: float) -> None:
        """Count one sequence preempted (its KV freed) at `now_s`."""
        self.preempted += 1
        b = int(now_s)
        self.preempted_per_s[b] = self.preempted_per_s.get(b, 0) + 1

    def note(self, now_s: float, tokens: float, seqs: int) -> None:
        """Record the KV held by `seqs` sequences during the iteration ending at `now_s` (called after
        the iteration's admissions are counted)."""
        if self.steps is not None:
            a, p = self._logged
            self.steps(now_s, tokens, seqs, self.admitted - a, self.preempted - p)
            self._logged = (self.admitted, self.preempted)
        if tokens > self.peak:
            self.peak = tokens
        if seqs > 1 and tokens > self.peak_shared:
            self.peak_shared = tokens
        if seqs > self.peak_seqs:
            self.peak_seqs = seqs
        b = int(now_s)
        if tokens > self.per_s.get(b, -1.0):
            self.per_s[b] = tokens


def kv_summary(uses: list[KvUse], allocation: str, horizon_s: float) -> dict:
    """summary.json's gpu.kv block: counters over replicas, peaks and series of the fullest replica."""
    cap = uses[0].capacity
    bin_s = max(1, math.ceil(horizon_s / SERIES_POINTS))
    series: dict[int, float] = {}
    preempted: dict[int, int] = {}
    for u in uses:
        for sec, tok in u.per_s.items():
            k = sec // bin_s
            if tok > series.get(k, -1.0):
                series[k] = tok
        for sec, n in u.preempted_per_s.items():
            preempted[sec // bin_s] = preempted.get(sec // bin_s, 0) + n
    n_bins = max(max(series, default=-1), max(preempted, default=-1)) + 1
    use = {"bin_s": bin_s, "max_tokens": [int(series.get(k, 0)) for k in range(n_bins)]}
    if allocation == "on_demand":  # preemptions (all replicas) in each bin
        use["preempted"] = [preempted.get(k, 0) for k in range(n_bins)]
    return {
        "allocation": allocation,
        "capacity_tokens": None if math.isinf(cap) else int(cap),
        "admitted": sum(u.admitted for u in uses),
        "preempted": sum(u.preempted for u in uses),
        "recomputed_tokens": sum(u.recomputed_tokens for u in uses),
        "peak_tokens": int(max(u.peak for u in uses)),
        "peak_shared_tokens": int(max(u.peak_shared for u in uses)),
        "peak_sequences": max(u.peak_seqs for u in uses),
        # max KV tokens in use on the fullest replica in each bin of `bin_s` seconds (0: idle bin)
        "use_series": use,
    }
