"""Latency models: how long GPU passes take, alone or batched. A registry keyed by `kind`.

Every model answers three questions, so any scheduler can use any model that can batch:
- `service_s(job)`: one job alone (the `fifo` scheduler; the unbatched reference);
- `batch_s(jobs)`: a static batch, prefilled together and decoded in lock-step until its longest
  answer ends (finished sequences stay in the batch as padding, as in HF `generate`);
- `iteration_s(new_jobs, n_decode, ctx_tokens)`: one iteration of continuous batching: the prefill
  of newly admitted jobs plus one decode step of `n_decode` running sequences that hold
  `ctx_tokens` context tokens in all.
A prefill emits a job's first output token; each later token is one decode step. The relative
-attention pass (stage 0, `out_tokens` 0) is a prefill on features the vision encoder already made.

Kinds:
- `roofline` (default): from the model and hardware profiles (sim/profiles.py). Prefill compute is
  FLOPs(n) = (24·n·d² + 4·n²·d)·L, the token at context c costs FLOPs(c+1) − FLOPs(c) =
  24·d²·L + 4·(2c+1)·d·L, m new tokens after c cached ones (prefix reuse) FLOPs(c+m) − FLOPs(c) =
  m·(24·d²·L + 4·(2c+m)·d·L), and a pass takes max(FLOPs / (peak·mfu), (weight bytes + KV bytes read) /
  (bandwidth·bw_efficiency)); the vision encoder adds its FLOPs / (peak·mfu) per image.
- `profile`: measured times from a CSV, interpolated (see `ProfileLatency`).
- `parametric`: vision per image, prefill at a token rate, a fixed time per decode step whatever the
  batch size (memory-bound decode). Defaults: llama.cpp figures for LLaVA-1.5-7B on an A100 (DESIGN §7).
  A job's `pre_flops` (codec decoder, projector on received tokens) costs nothing here or in `profile`:
  neither kind has a FLOP rate; use `roofline` to time it. A `profile` prefill was measured with the
  vision encoder, so it still charges one for a token pass (images = 0): an overestimate.
- `exponential`, `deterministic`: ignore the job's shape; for checks against queueing theory. They
  time whole jobs only, so they cannot be batched.
"""

from __future__ import annotations

import csv
import math
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, PositiveFloat

from edgevlm.sim.errors import ConfigError
from edgevlm.sim.registry import Registry, Strict
from edgevlm.sim.rng import Batched

latency_models: Registry = Registry("server.latency")

#: Share of accelerator memory that weights and KV cache may use (vLLM's gpu_memory_utilization default).
MEMORY_UTILISATION = 0.9


@dataclass(slots=True, frozen=True)
class Job:
    """One GPU pass: `stage` 1, 2, or 0 for the relative-attention pass.

    `images` vision-encoder passes run first (0 when the visual tokens arrive encoded, e.g. the
    progressive codec's payload); `pre_flops` is other work before the LLM, such as a codec decoder
    and the projector on received tokens (timed by `roofline` only; see `Roofline.iteration_s`).
    """

    stage: int
    images: int
    visual_tokens: int
    prompt_tokens: int
    out_tokens: int
    pre_flops: float = 0.0
    #: Leading prompt tokens whose KV is already cached (prefix reuse, sim/server/prefix.py): the
    #: prefill computes only the others, attending to all.
    cached_tokens: int = 0
    #: The request whose stage-1 prefix this pass stores or reuses; None: no prefix caching.
    prefix_key: int | None = None
    #: What a pass's duration depends on: the latency models' cache key, computed once (a Job is
    #: frozen; `dataclasses.replace` makes a new one) because they look it up on every pass.
    key: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "key", (self.stage, self.images, self.visual_tokens, self.prompt_tokens,
                                         self.out_tokens, self.pre_flops, self.cached_tokens))

    @property
    def prefill_tokens(self) -> int:
        return self.visual_tokens + self.prompt_tokens


# ---------------------------------------------------------------- configs


class RooflineLatency(Strict):
    kind: Literal["roofline"] = "roofline"
    mfu: float | None = Field(None, gt=0, le=1, description="compute efficiency; default: the hardware's")
    bw_efficiency: float | None = Field(None, gt=0, le=1, description="bandwidth efficiency; default: the hardware's")


class ProfileLatency(Strict):
    """Measured pass times, CSV columns `phase,batch,tokens,seconds`, one row per measurement.

    phase `prefill`: `batch` sequences of `tokens` prompt tokens each (visual + text), the whole pass
    including the vision encoder. phase `decode`: one decode step of `batch` sequences holding
    `tokens` context tokens each. Both phases need rows at batch 1. Within one (phase, batch) rows list
    tokens in increasing order; times are linear in tokens between rows and extrapolated from the last
    two (a single row is constant), and linear in batch between measured batch sizes. A batch above the
    largest measured one is an error at start-up (the scheduler's max_batch is checked). A continuous
    iteration that mixes prefills and decodes costs their sum. Other columns are ignored. A relative
    path is taken from the working directory.
    """

    kind: Literal["profile"]
    path: str = Field(min_length=1)


class ParametricLatency(Strict):
    kind: Literal["parametric"] = "parametric"
    vision_s_per_image: float = Field(0.02, ge=0)
    prefill_tokens_per_s: PositiveFloat = 6000.0
    decode_s_per_token: float = Field(0.0135, ge=0, description="one decode step, any batch size")


class ExponentialLatency(Strict):
    kind: Literal["exponential"]
    mean_s: PositiveFloat


class DeterministicLatency(Strict):
    kind: Literal["deterministic"]
    service_s: PositiveFloat


# ---------------------------------------------------------------- built models


class LatencyModel:
    """A built latency model. Subclasses that can batch override `batch_s` and `iteration_s`."""

    batchable = False
    #: KV-cache tokens that fit beside the weights (continuous batching admits within it).
    kv_capacity_tokens = math.inf
    #: Largest batch the model can time (profiles: the largest measured).
    max_batch = math.inf

    def __init__(self):
        self._cache: dict[tuple, float] = {}

    def service_s(self, job: Job) -> float:
        key = job.key
        t = self._cache.get(key)
        if t is None:
            t = self._cache[key] = self.batch_s([job])
        return t

    def batch_s(self, jobs: list[Job]) -> float:
        """Static batch: one prefill of all jobs, then lock-step decode to the longest answer."""
        t = self.iteration_s(jobs, 0, 0.0)
        n = len(jobs)
        ctx = float(sum(j.prefill_tokens for j in jobs))
        for _ in range(max(j.out_tokens for j in jobs) - 1):
            t += self.iteration_s((), n, ctx)
            ctx += n
        return t

    def iteration_s(self, new_jobs, n_decode: int, ctx_tokens: float) -> float:
        raise NotImplementedError


class Roofline(LatencyModel):
    batchable = True

    def __init__(self, model, hardware, mfu: float | None = None, bw_efficiency: float | None = None,
                 where: str = "server"):
        super().__init__()
        mfu = mfu or hardware.mfu
        bw_eff = bw_efficiency or hardware.bw_efficiency
        self.flop_per_s = hardware.peak_tflops * 1e12 * mfu
        self.byte_per_s = hardware.mem_bw_gbps * 1e9 * bw_eff
        self.weight_bytes = model.params_b * 1e9 * hardware.dtype_bytes
        self.kv_bytes = model.kv_bytes_per_token(hardware.dtype_bytes)
        self.vision_s = model.vision_tflops * 1e12 / self.flop_per_s
        self.a = 24.0 * model.d_model ** 2 * model.n_layers  # FLOPs linear in tokens
        self.b = 4.0 * model.d_model * model.n_layers  # FLOPs quadratic in tokens
        free = hardware.memory_gb * 1e9 * MEMORY_UTILISATION - self.weight_bytes
        if free <= 0:
            raise ConfigError(f"{where}.hardware", f"model {model.name!r} ({self.weight_bytes / 1e9:.1f} GB of "
                              f"weights) does not fit in {hardware.name!r} ({hardware.memory_gb:g} GB)")
        self.kv_capacity_tokens = free / self.kv_bytes

    def iteration_s(self, new_jobs, n_decode: int, ctx_tokens: float) -> float:
        a, b = self.a, self.b
        flops = n_decode * a + b * (2.0 * ctx_tokens + n_decode) if n_decode else 0.0
        kv = ctx_tokens
        images = 0
        pre = 0.0
        for j in new_jobs:
            n = j.visual_tokens + j.prompt_tokens
            c = j.cached_tokens
            # m = n - c new tokens against c cached: FLOPs(n) - FLOPs(c) = m·(a + b·(2c + m))
            flops += n * (a + b * n) if not c else (n - c) * (a + b * (n + c))
            kv += n
            if j.stage:
                images += j.images
            pre += j.pre_flops
        compute = flops / self.flop_per_s
        memory = (self.weight_bytes + self.kv_bytes * kv) / self.byte_per_s
        # Vision encode and other pre-LLM work (codec decoder, projector) run before the LLM, compute-bound.
        return images * self.vision_s + pre / self.flop_per_s + (compute if compute > memory else memory)


class Parametric(LatencyModel):
    batchable = True

    def __init__(self, cfg: ParametricLatency):
        super().__init__()
        self.vision = cfg.vision_s_per_image
        self.per_token = 1.0 / cfg.prefill_tokens_per_s
        self.decode = cfg.decode_s_per_token

    def iteration_s(self, new_jobs, n_decode: int, ctx_tokens: float) -> float:
        t = self.decode if n_decode else 0.0
        for j in new_jobs:
            t += ((j.visual_tokens + j.prompt_tokens - j.cached_tokens) * self.per_token
                  + (self.vision * j.images if j.stage else 0.0))
        return t


class _Unbatched(LatencyModel):
    def __init__(self, draw):
        super().__init__()
        self.service_s = draw  # type: ignore[method-assign]

    def batch_s(self, jobs):
        raise NotImplementedError("this latency model times whole jobs only")


class _Curve:
    """Seconds vs tokens for one (phase, batch): piecewise linear, extrapolated from the end segments."""

    __slots__ = ("x", "y")

    def __init__(self, x: list[float], y: list[float]):
        self.x, self.y = x, y

    def __call__(self, t: float) -> float:
        x, y = self.x, self.y
        if len(x) == 1:
            return y[0]
        i = min(max(bisect_right(x, t), 1), len(x) - 1)
        x0, x1, y0, y1 = x[i - 1], x[i], y[i - 1], y[i]
        return max(0.0, y0 + (y1 - y0) * (t - x0) / (x1 - x0))


class _Surface:
    """Seconds vs (batch, tokens): a curve per measured batch, linear in batch between them."""

    def __init__(self, rows: dict[int, _Curve]):
        self.batches = sorted(rows)
        self.curves = [rows[b] for b in self.batches]

    def __call__(self, batch: float, tokens: float) -> float:
        bs = self.batches
        i = bisect_right(bs, batch)
        if i and bs[i - 1] == batch:
            return self.curves[i - 1](tokens)
        if i == len(bs):  # above the largest measured batch (start-up checks keep schedulers below it)
            return self.curves[-1](tokens) * batch / bs[-1]
        if i == 0:
            return self.curves[0](tokens)
        b0, b1 = bs[i - 1], bs[i]
        y0, y1 = self.curves[i - 1](tokens), self.curves[i](tokens)
        return y0 + (y1 - y0) * (batch - b0) / (b1 - b0)


class Profile(LatencyModel):
    batchable = True

    def __init__(self, prefill: _Surface, decode: _Surface):
        super().__init__()
        self.prefill, self.decode = prefill, decode
        self.max_batch = min(prefill.batches[-1], decode.batches[-1])

    def iteration_s(self, new_jobs, n_decode: int, ctx_tokens: float) -> float:
        t = self.decode(n_decode, ctx_tokens / n_decode) if n_decode else 0.0
        if new_jobs:
            k = len(new_jobs)
            t += self.prefill(k, sum(j.visual_tokens + j.prompt_tokens - j.cached_tokens for j in new_jobs) / k)
        return t


PROFILE_COLUMNS = ("phase", "batch", "tokens", "seconds")


def read_profile(path: str | Path, where: str) -> Profile:
    """Parse a profile CSV; any problem is one ConfigError naming the file, line and column."""
    p = Path(path)
    field = f"{where}.path"
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(field, f"latency profile not found: {p}") from None
    except UnicodeDecodeError:
        raise ConfigError(field, f"{p}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(field, f"cannot read latency profile {p}: {exc.strerror}") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if not header:
        raise ConfigError(field, f"{p}: empty file; the header must name the columns {', '.join(PROFILE_COLUMNS)}")
    header = [h.strip() for h in header]
    missing = [c for c in PROFILE_COLUMNS if c not in header]
    if missing:
        raise ConfigError(field, f"{p}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
                          f"required: {', '.join(PROFILE_COLUMNS)} (got {', '.join(header)})")
    idx = {c: header.index(c) for c in PROFILE_COLUMNS}
    points: dict[str, dict[int, tuple[list[float], list[float]]]] = {"prefill": {}, "decode": {}}
    for line, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < len(header):
            raise ConfigError(field, f"{p} line {line}: {len(row)} fields, the header has {len(header)}")
        phase = row[idx["phase"]].strip()
        if phase not in points:
            raise ConfigError(field, f"{p} line {line}: column 'phase' is {phase!r}; allowed: prefill, decode")
        vals = {}
        for c in ("batch", "tokens", "seconds"):
            raw = row[idx[c]].strip()
            try:
                vals[c] = float(raw)
            except ValueError:
                raise ConfigError(field, f"{p} line {line}: column {c!r} is {raw!r}, not a number") from None
            if not math.isfinite(vals[c]):
                raise ConfigError(field, f"{p} line {line}: column {c!r} is {raw!r}, not a finite number")
        batch = vals["batch"]
        if batch < 1 or batch != int(batch):
            raise ConfigError(field, f"{p} line {line}: column 'batch' must be a positive integer, got {batch:g}")
        if vals["tokens"] < 0:
            raise ConfigError(field, f"{p} line {line}: column 'tokens' must be >= 0, got {vals['tokens']:g}")
        if vals["seconds"] <= 0:
            raise ConfigError(field, f"{p} line {line}: column 'seconds' must be > 0, got {vals['seconds']:g}")
        xs, ys = points[phase].setdefault(int(batch), ([], []))
        if xs and vals["tokens"] <= xs[-1]:
            raise ConfigError(field, f"{p} line {line}: column 'tokens' must increase within phase={phase}, "
                              f"batch={int(batch)}; got {vals['tokens']:g} after {xs[-1]:g}")
        xs.append(vals["tokens"])
        ys.append(vals["seconds"])
    surfaces = {}
    for phase, rows in points.items():
        if 1 not in rows:
            raise ConfigError(field, f"{p}: no '{phase}' rows at batch 1; both phases need batch-1 measurements")
        surfaces[phase] = _Surface({b: _Curve(*xy) for b, xy in rows.items()})
    return Profile(surfaces["prefill"], surfaces["decode"])


# ---------------------------------------------------------------- registry


@latency_models.register(RooflineLatency)
def _roofline(cfg: RooflineLatency, rng: np.random.Generator, model, hardware, where: str = "server"):
    return Roofline(model, hardware, cfg.mfu, cfg.bw_efficiency, where)


@latency_models.register(ProfileLatency)
def _profile(cfg: ProfileLatency, rng: np.random.Generator, model, hardware, where: str = "server"):
    return read_profile(cfg.path, f"{where}.latency")


@latency_models.register(ParametricLatency)
def _parametric(cfg: ParametricLatency, rng: np.random.Generator, model=None, hardware=None, where: str = "server"):
    return Parametric(cfg)


@latency_models.register(ExponentialLatency)
def _exponential(cfg: ExponentialLatency, rng: np.random.Generator, model=None, hardware=None, where: str = "server"):
    draw = Batched(lambda n: rng.exponential(cfg.mean_s, n))
    return _Unbatched(lambda job: draw())


@latency_models.register(DeterministicLatency)
def _deterministic(cfg: DeterministicLatency, rng: np.random.Generator, model=None, hardware=None,
                   where: str = "server"):
    s = cfg.service_s
    return _Unbatched(lambda job: s)
