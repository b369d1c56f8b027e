"""Link capacity over time: a constant rate, a Mahimahi packet-delivery trace, or a `t_s,mbps` CSV.

Every capacity is a *profile* with cumulative capacity `cum_bits(t)` (bits the link may have
delivered in [0, t], right-continuous) and its inverse `time_at(bits)` (the first t with
cum_bits(t) >= bits). Links use these to find finish times exactly without an event per trace step:

- **Mahimahi** (Winstein et al., NSDI 2013; github.com/ravinet/mahimahi): each line is an integer
  millisecond at which one 1500-byte packet may be delivered; repeated lines are several packets;
  the trace loops with period = its last timestamp. cum_bits is a step function, so a transfer on
  a trace link ends exactly at a delivery opportunity, and no window ever carries more bytes than
  the opportunities inside it. The simulator is byte-fluid: two small messages may share one
  1500-byte opportunity (Mahimahi itself would send whole packets).
- **CSV** `t_s,mbps` (an optional header line): rate `mbps` holds from `t_s` to the next row; the
  first row is at t_s = 0; the last row holds as long as the interval before it; then it loops.
- **constant**: `mbps`.

Where a link needs a *rate* rather than a cumulative curve (max-min sharing with access caps), it
reads `rate_at(t)`, piecewise constant until `next_change(t)`. For a Mahimahi trace that is the
trace averaged over `bin_ms` windows (default 100 ms): a documented fluid approximation.

Bad files give one line naming the file and line (`BandwidthTraceError`).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import numpy as np
from pydantic import Field, PositiveFloat

from edgevlm.sim.errors import UserError
from edgevlm.sim.registry import Strict

MAHIMAHI_PACKET_BYTES = 1500
PACKET_BITS = MAHIMAHI_PACKET_BYTES * 8
_EPS_MS = 1e-6  # 1 ns: absorbs float error when a time is computed from a trace timestamp
MAX_TRACE_LINES = 20_000_000


class BandwidthTraceError(UserError):
    """A bandwidth trace file is missing or malformed; the message names the file and line."""


# ---------------------------------------------------------------- configs (YAML)


class ConstantTrace(Strict):
    """A constant rate."""

    kind: Literal["constant"] = "constant"
    mbps: PositiveFloat


class MahimahiTrace(Strict):
    """A Mahimahi trace file: one line per 1500-byte delivery opportunity, integer ms, looping."""

    kind: Literal["mahimahi"] = "mahimahi"
    path: str = Field(min_length=1)
    bin_ms: PositiveFloat = Field(100.0, description="averaging window where a rate is needed (access caps)")


class CsvTrace(Strict):
    """A CSV of `t_s,mbps` rows: piecewise-constant rate, looping."""

    kind: Literal["csv"] = "csv"
    path: str = Field(min_length=1)


BandwidthTraceConfig = Annotated[Union[ConstantTrace, MahimahiTrace, CsvTrace], Field(discriminator="kind")]


# ---------------------------------------------------------------- profiles


class ConstantProfile:
    """Capacity `bps` at all times."""

    constant = True

    def __init__(self, bps: float):
        self.bps = self.mean_bps = self.peak_bps = float(bps)

    def cum_bits(self, t: float) -> float:
        return self.bps * t

    def time_at(self, bits: float) -> float:
        return bits / self.bps if bits > 0 else 0.0

    def rate_at(self, t: float) -> float:
        return self.bps

    def next_change(self, t: float) -> float:
        return math.inf


class MahimahiProfile:
    """Delivery opportunities at integer milliseconds (a step-function capacity), looping."""

    constant = False

    def __init__(self, timestamps_ms: list[int], bin_ms: float = 100.0, name: str = "trace"):
        if not timestamps_ms:
            raise BandwidthTraceError(f"{name}: empty trace (no delivery opportunities)")
        self.ts = [float(t) for t in timestamps_ms]
        self.n = len(self.ts)
        self.period_ms = self.ts[-1]
        if self.period_ms <= 0:
            raise BandwidthTraceError(f"{name}: the last timestamp must be > 0 ms (it is the loop period)")
        self.bin_ms = float(bin_ms)
        self.mean_bps = self.n * PACKET_BITS / (self.period_ms / 1e3)
        self.name = name
        self._bin = (-1, 0.0)
        per_ms: dict[int, int] = {}
        for t in timestamps_ms:
            per_ms[t] = per_ms.get(t, 0) + 1
        self.peak_bps = max(per_ms.values()) * PACKET_BITS * 1e3  # a burst within one ms

    def packets_by(self, t_ms: float) -> int:
        """Opportunities at times <= t_ms."""
        p = self.period_ms
        k = math.floor((t_ms + _EPS_MS) / p)
        return k * self.n + bisect_right(self.ts, t_ms - k * p + _EPS_MS)

    def cum_bits(self, t: float) -> float:
        if t < 0:
            return 0.0
        return self.packets_by(t * 1e3) * PACKET_BITS

    def time_at(self, bits: float) -> float:
        m = math.ceil(bits / PACKET_BITS - 1e-9)
        if m <= 0:
            return 0.0
        k, r = divmod(m - 1, self.n)
        return (k * self.period_ms + self.ts[r]) / 1e3

    def rate_at(self, t: float) -> float:
        j = math.floor(t * 1e3 / self.bin_ms + 1e-12)
        if self._bin[0] != j:
            b = self.bin_ms
            bits = (self.packets_by((j + 1) * b) - self.packets_by(j * b)) * PACKET_BITS
            self._bin = (j, bits / (b / 1e3))
        return self._bin[1]

    def next_change(self, t: float) -> float:
        return (math.floor(t * 1e3 / self.bin_ms + 1e-12) + 1) * self.bin_ms / 1e3


class PiecewiseProfile:
    """Piecewise-constant rate: rates_bps[i] from starts_s[i] to the next start, looping at period_s."""

    constant = False

    def __init__(self, starts_s: list[float], rates_bps: list[float], period_s: float, name: str = "trace"):
        self.starts = list(starts_s)
        self.rates = list(rates_bps)
        self.period_s = period_s
        ends = self.starts[1:] + [period_s]
        self.cum = [0.0]
        for s, e, r in zip(self.starts, ends, self.rates):
            self.cum.append(self.cum[-1] + r * (e - s))
        self.total_bits = self.cum[-1]
        if self.total_bits <= 0:
            raise BandwidthTraceError(f"{name}: every rate is zero; the link could never deliver")
        self.mean_bps = self.total_bits / period_s
        self.peak_bps = max(self.rates)
        self.name = name

    def _locate(self, t: float) -> tuple[int, float, int]:
        k = math.floor(t / self.period_s)
        r = t - k * self.period_s
        i = max(0, bisect_right(self.starts, r) - 1)
        return k, r, i

    def cum_bits(self, t: float) -> float:
        if t <= 0:
            return 0.0
        k, r, i = self._locate(t)
        return k * self.total_bits + self.cum[i] + self.rates[i] * (r - self.starts[i])

    def time_at(self, bits: float) -> float:
        if bits <= 0:
            return 0.0
        k = math.floor(bits / self.total_bits)
        rem = bits - k * self.total_bits
        if rem <= 0:
            k, rem = k - 1, self.total_bits
        i = bisect_left(self.cum, rem) - 1  # cum[i] < rem <= cum[i+1], so rates[i] > 0
        return k * self.period_s + self.starts[i] + (rem - self.cum[i]) / self.rates[i]

    def rate_at(self, t: float) -> float:
        return self.rates[self._locate(t)[2]]

    def next_change(self, t: float) -> float:
        k, _, i = self._locate(t)
        nxt = self.starts[i + 1] if i + 1 < len(self.starts) else self.period_s
        return k * self.period_s + nxt


class ShiftedProfile:
    """A profile started `offset_s` into its trace (each client's access link starts somewhere else)."""

    constant = False

    def __init__(self, base, offset_s: float):
        self.base = base
        self.offset_s = offset_s
        self._base_bits = base.cum_bits(offset_s)
        self.mean_bps, self.peak_bps = base.mean_bps, base.peak_bps

    def cum_bits(self, t: float) -> float:
        return self.base.cum_bits(t + self.offset_s) - self._base_bits

    def time_at(self, bits: float) -> float:
        return max(0.0, self.base.time_at(bits + self._base_bits) - self.offset_s)

    def rate_at(self, t: float) -> float:
        return self.base.rate_at(t + self.offset_s)

    def next_change(self, t: float) -> float:
        return self.base.next_change(t + self.offset_s) - self.offset_s


def period_s(profile) -> float:
    """The loop period of a trace profile (seconds); inf for a constant."""
    if isinstance(profile, MahimahiProfile):
        return profile.period_ms / 1e3
    if isinstance(profile, PiecewiseProfile):
        return profile.period_s
    return math.inf


# ---------------------------------------------------------------- parsing


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BandwidthTraceError(f"bandwidth trace not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise BandwidthTraceError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise BandwidthTraceError(f"cannot read bandwidth trace {path}: {exc.strerror}") from None
    lines = text.splitlines()
    if len(lines) > MAX_TRACE_LINES:
        raise BandwidthTraceError(f"{path}: more than {MAX_TRACE_LINES} lines")
    return lines


def parse_mahimahi(path: str | Path, bin_ms: float = 100.0) -> MahimahiProfile:
    """Read a Mahimahi trace; blank lines are skipped, anything else must be an integer ms."""
    path = Path(path)
    ts: list[int] = []
    prev = 0
    for lineno, raw in enumerate(_read_lines(path), 1):
        line = raw.strip()
        if not line:
            continue
        try:
            t = int(line)
        except ValueError:
            raise BandwidthTraceError(f"{path}:{lineno}: expected an integer millisecond, got {line[:40]!r}") from None
        if t < 0:
            raise BandwidthTraceError(f"{path}:{lineno}: negative timestamp {t}")
        if t < prev:
            raise BandwidthTraceError(f"{path}:{lineno}: timestamps must not decrease ({t} after {prev})")
        prev = t
        ts.append(t)
    if not ts:
        raise BandwidthTraceError(f"{path}: empty trace (no delivery opportunities)")
    return MahimahiProfile(ts, bin_ms, name=str(path))


def parse_csv(path: str | Path) -> PiecewiseProfile:
    """Read `t_s,mbps` rows (an optional `t_s,mbps` header; `#` comments and blank lines skipped)."""
    path = Path(path)
    starts: list[float] = []
    rates: list[float] = []
    for lineno, raw in enumerate(_read_lines(path), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        cells = [c.strip() for c in line.split(",")]
        if not starts and cells[0].lower() in ("t_s", "t", "time_s"):
            continue  # header
        if len(cells) != 2:
            raise BandwidthTraceError(f"{path}:{lineno}: expected 2 fields 't_s,mbps', got {len(cells)}")
        try:
            t, mbps = float(cells[0]), float(cells[1])
        except ValueError:
            raise BandwidthTraceError(f"{path}:{lineno}: not numbers: {line[:40]!r}") from None
        if not (math.isfinite(t) and math.isfinite(mbps)):
            raise BandwidthTraceError(f"{path}:{lineno}: values must be finite")
        if t < 0 or mbps < 0:
            raise BandwidthTraceError(f"{path}:{lineno}: negative value ({line[:40]})")
        if not starts and t != 0:
            raise BandwidthTraceError(f"{path}:{lineno}: the first row must be at t_s = 0, got {t:g}")
        if starts and t <= starts[-1]:
            raise BandwidthTraceError(f"{path}:{lineno}: t_s must increase ({t:g} after {starts[-1]:g})")
        starts.append(t)
        rates.append(mbps * 1e6)
    if not starts:
        raise BandwidthTraceError(f"{path}: empty trace (no 't_s,mbps' rows)")
    period = starts[-1] + (starts[-1] - starts[-2]) if len(starts) > 1 else 1.0
    return PiecewiseProfile(starts, rates, period, name=str(path))


def resolve_path(path: str, base_dir: Path | None = None) -> Path:
    """A trace path: absolute, else beside the scenario file (if known), else the working directory."""
    p = Path(path)
    if p.is_absolute():
        return p
    candidates = ([base_dir / p] if base_dir is not None else []) + [Path.cwd() / p]
    for c in candidates:
        if c.is_file():
            return c
    raise BandwidthTraceError(f"bandwidth trace not found: {path} (looked in: "
                              + ", ".join(str(c.parent) for c in candidates) + ")")


def load_profile(cfg, base_dir: Path | None = None, _cache: Optional[dict] = None):
    """Build a profile from a trace config; files are read once per (kind, path, bin) via `_cache`."""
    if cfg.kind == "constant":
        return ConstantProfile(cfg.mbps * 1e6)
    path = resolve_path(cfg.path, base_dir)
    key = (cfg.kind, str(path), getattr(cfg, "bin_ms", None))
    if _cache is not None and key in _cache:
        return _cache[key]
    prof = parse_mahimahi(path, cfg.bin_ms) if cfg.kind == "mahimahi" else parse_csv(path)
    if _cache is not None:
        _cache[key] = prof
    return prof


# ---------------------------------------------------------------- generated traces


def mahimahi_lines(rate_mbps_per_s: list[float], seed: int = 0) -> list[int]:
    """Mahimahi timestamps for a sequence of per-second mean rates (Mbit/s), with packets spread
    evenly inside each second. A generator for tests and shipped example traces (no real data)."""
    out: list[int] = []
    carry = 0.0
    for sec, mbps in enumerate(rate_mbps_per_s):
        for ms in range(1000):
            carry += mbps * 1e6 / 1e3 / PACKET_BITS
            k = int(carry)
            carry -= k
            out.extend([sec * 1000 + ms + 1] * k)
    return out


def write_mahimahi(path: str | Path, timestamps_ms: list[int]) -> Path:
    path = Path(path)
    path.write_text("".join(f"{t}\n" for t in timestamps_ms))
    return path


def synthetic_rates_mbps(seconds: int, mean_mbps: float, seed: int = 0, sigma: float = 0.6,
                         memory: float = 0.8, outage_p: float = 0.03) -> list[float]:
    """Per-second rates of an invented cellular-like uplink: a log-normal AR(1) around `mean_mbps`
    with short outages. SYNTHETIC: for examples and tests, not a measurement."""

    rng = np.random.default_rng(seed)
    x, out = 0.0, []
    for _ in range(seconds):
        x = memory * x + math.sqrt(1 - memory**2) * rng.normal()
        out.append(0.0 if rng.random() < outage_p else mean_mbps * math.exp(sigma * x - sigma**2 / 2))
    if out[0] <= 0:
        out[0] = mean_mbps
    return out


def write_csv_trace(path: str | Path, rates_mbps: list[float], step_s: float = 1.0, note: str = "") -> Path:
    """Write rates as a `t_s,mbps` CSV trace (one row per step)."""
    path = Path(path)
    head = "".join(f"# {line}\n" for line in note.splitlines())
    path.write_text(head + "t_s,mbps\n" + "".join(f"{i * step_s:g},{r:.3f}\n" for i, r in enumerate(rates_mbps)))
    return path
