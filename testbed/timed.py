"""`server.engine: timed`: an accelerator stand-in whose passes take exactly the simulator's times.

Why: a dedicated accelerator runs a given pass in a steady time; this shared 2-core host does not
(its speed drifts by +20-45 % for 5-10 s at a time, so the model-process testbed differed from its own
replays by up to 42 %; see testbed/README.md). The timed engine keeps everything else real (HTTP,
JPEG bytes, TCP over the shaped links, the edge's policy on the live uncertainty), and makes each
pass occupy the server for the time the simulator gives it:

- **Times.** `PassTimes.from_profile`: the simulator's own latency model (a `profile` CSV, read by
  `sim.latency.read_profile`) on the simulator's own jobs (`sim.engine.sample_jobs`), so a pass here
  lasts what `service_s` says there; or `PassTimes.from_table`: a calibrated per-sample table
  (CSV `sample_id,s1_s,att_s,s2_s`).
- **Clock.** `hold_until` sleeps to within `spin_s` of the pass's end, then spins on
  `time.perf_counter` (releasing the GIL every turn, so the HTTP event loop keeps running).
- **Answers.** Looked up from the trace the simulator uses (at the policy's JPEG quality): the
  stage-1 answer and per-token uncertainty (float32, as stored), the relative-attention box and the
  stage-2 answer and token count. The images the edge sends are still received and decoded by the
  server but not run through a model; the trace's values are what the tiny model answered on those
  same decoded images (the validation trace is extracted at `infer_jpeg_quality`).
"""

from __future__ import annotations

import csv
import os
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from edgevlm.sim.engine import sample_jobs
from edgevlm.sim.errors import UserError
from edgevlm.sim.latency import LatencyModel, read_profile
from edgevlm.sim.workload import Workload

#: Default: sleep until this close to a pass's end, then spin (a sleep on this host overshoots by
#: 0.05-0.5 ms, more under load).
SPIN_S = 0.002
STAGES = {1: "s1_s", 0: "att_s", 2: "s2_s"}
OPS = {"stage1": 1, "attention_box": 0, "stage2": 2}  # the engine's pass -> the simulator's stage
#: The GIL switch interval a timed server runs with (Python's default is 5 ms): when the HTTP thread
#: decodes a JPEG as a pass ends, the GPU thread waits up to one interval for the GIL to stamp the
#: end and start the next pass (measured: 3 of 36 passes 1.6-2.8 ms long at the default).
SWITCH_INTERVAL_S = 1e-4


def hold_until(end_perf_s: float, spin_s: float = SPIN_S) -> None:
    """Return at `end_perf_s` (time.perf_counter): sleep, then spin the last `spin_s`."""
    left = end_perf_s - time.perf_counter()
    if left > spin_s:
        time.sleep(left - spin_s)
    while time.perf_counter() < end_perf_s:
        time.sleep(0)  # a zero sleep releases the GIL each turn


class PassTimes:
    """Seconds of each pass (stage 1, 0 = attention, 2) per trace row, alone or in a static batch."""

    def __init__(self, single: dict[int, np.ndarray], model: LatencyModel | None = None, jobs=None,
                 source: str = ""):
        self.single = single
        self.model, self.jobs, self.source = model, jobs, source

    @classmethod
    def from_profile(cls, path: str | Path, workload: Workload, visual_tokens: int) -> "PassTimes":
        """The simulator's `profile` latency model on the simulator's jobs of each sample."""
        model = read_profile(path, "pass_times")
        jobs = sample_jobs(workload, visual_tokens)
        single = {st: np.array([model.service_s(j) for j in js]) for st, js in jobs.items()}
        return cls(single, model, jobs, f"profile {path}")

    @classmethod
    def from_table(cls, path: str | Path, workload: Workload) -> "PassTimes":
        """A per-sample table `sample_id,s1_s,att_s,s2_s` (every trace sample; batch 1 only)."""
        rows = {}
        with open(path, newline="", encoding="utf-8") as f:
            for k, r in enumerate(csv.DictReader(f), start=2):
                try:
                    rows[r["sample_id"]] = [float(r[c]) for c in STAGES.values()]
                except (KeyError, TypeError, ValueError):
                    raise UserError(f"--pass-times {path} line {k}: need columns sample_id,"
                                    f"{','.join(STAGES.values())} with numbers") from None
        missing = [s for s in workload.sample_id if s not in rows]
        if missing:
            raise UserError(f"--pass-times {path}: no row for sample_id {missing[0]!r} of the trace")
        table = np.array([rows[s] for s in workload.sample_id])
        return cls({st: table[:, i] for i, st in enumerate(STAGES)}, source=f"table {path}")

    @classmethod
    def load(cls, path: str | Path, workload: Workload, visual_tokens: int) -> "PassTimes":
        """A profile CSV (header with `phase`) or a per-sample table (header with `sample_id`)."""
        try:
            header = Path(path).read_text(encoding="utf-8").split("\n", 1)[0]
        except OSError as exc:
            raise UserError(f"--pass-times: cannot read {path} ({exc.strerror})") from None
        cols = [c.strip() for c in header.split(",")]
        if "phase" in cols:
            return cls.from_profile(path, workload, visual_tokens)
        if "sample_id" in cols:
            return cls.from_table(path, workload)
        raise UserError(f"--pass-times {path}: header {header!r} is neither a profile (phase,batch,tokens,seconds) "
                        "nor a per-sample table (sample_id,s1_s,att_s,s2_s)")

    def pass_s(self, stage: int, row: int) -> float:
        return float(self.single[stage][row])

    def batch_s(self, stage: int, rows: Sequence[int]) -> float:
        """A static batch of these rows' passes (joint prefill, lock-step decode: `LatencyModel.batch_s`)."""
        if len(rows) == 1:
            return self.pass_s(stage, rows[0])
        if self.model is None:
            raise UserError("batched passes need a profile (--pass-times with phase,batch,tokens,seconds rows)")
        return self.model.batch_s([self.jobs[stage][r] for r in rows])


class TimedEngine:
    """The InlineEngine's interface (stage1, attention_box, stage2), answering from the trace and
    holding each pass for its `PassTimes` duration. Not thread-safe: the server's one GPU thread calls it."""

    def __init__(self, workload: Workload, times: PassTimes, spin_s: float = SPIN_S):
        self.workload, self.times, self.spin_s = workload, times, spin_s
        prov = workload.provenance
        self.model_id = f"timed:{prov.get('model_id', workload.path.stem)}"
        self.vision_input_px = int(prov.get("vision_input_px") or 64)
        self.visual_tokens_per_image = int(prov.get("visual_tokens_per_image") or 0)
        self.row = {s: i for i, s in enumerate(workload.sample_id)}
        self.realtime = False  # set once the GPU thread runs at real-time priority
        self._rt_threads: set[int] = set()
        t = workload.table
        self._s1 = t.column("s1_answer").to_pylist()
        self._s2 = t.column("s2_answer").to_pylist()
        self._box = list(zip(*(t.column(c).to_pylist() for c in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"))))
        f32 = lambda a: [float(v) for v in np.asarray(a, dtype=np.float32)]  # noqa: E731
        self._unc = list(zip(*(map(f32, workload.token_values(c)) for c in ("s1_min_entropy", "s1_shannon",
                                                                              "s1_margin"))))

    @classmethod
    def load(cls, trace: str | Path, quality: int, pass_times: str | Path,
             visual_tokens: int | None = None, spin_s: float = SPIN_S) -> "TimedEngine":
        workload = Workload.load(trace).at_quality(quality, "--jpeg-quality")
        n_v = visual_tokens or int(workload.provenance.get("visual_tokens_per_image") or 0)
        if n_v <= 0:
            raise UserError("--visual-tokens: the trace does not say its visual tokens per image; give them")
        return cls(workload, PassTimes.load(pass_times, workload, n_v), spin_s)

    def _row(self, sample_id: str | None) -> int:
        try:
            return self.row[sample_id]
        except KeyError:
            raise ValueError(f"sample_id {sample_id!r} is not in the timed engine's trace") from None

    def _realtime(self) -> None:
        """Run the calling (GPU) thread at real-time priority (SCHED_FIFO 10) where allowed (root):
        on this loaded 2-core host a normal thread was woken 1-3 ms late in 8 % of passes."""
        tid = threading.get_native_id()
        if tid in self._rt_threads:
            return
        self._rt_threads.add(tid)
        try:
            os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(10))
            self.realtime = True
        except (PermissionError, OSError, AttributeError):
            pass

    def _hold(self, start: float, stage: int, row: int) -> None:
        self._realtime()
        hold_until(start + self.times.pass_s(stage, row), self.spin_s)

    def stage1(self, img, question: str, sample_id: str | None = None):
        start = time.perf_counter()
        r = self._row(sample_id)
        self._hold(start, 1, r)
        return self._answer("stage1", r)

    def attention_box(self, img, question: str, image_w: int, image_h: int, sample_id: str | None = None):
        start = time.perf_counter()
        r = self._row(sample_id)
        self._hold(start, 0, r)
        return self._answer("attention_box", r)

    def stage2(self, img, local, question: str, sample_id: str | None = None):
        start = time.perf_counter()
        r = self._row(sample_id)
        self._hold(start, 2, r)
        return self._answer("stage2", r)

    def _answer(self, op: str, r: int):
        if op == "stage1":
            return (self._s1[r], *self._unc[r])
        if op == "attention_box":
            return tuple(int(v) for v in self._box[r])
        return self._s2[r], int(self.workload.s2_tokens[r])

    def run_batch(self, calls: Sequence[tuple[str, str]]) -> list:
        """One static batch of passes, `calls` = [(op, sample_id)]: held for the latency model's batch
        time of their jobs (joint prefill, lock-step decode; `LatencyModel.batch_s`), then each answered."""
        start = time.perf_counter()
        rows = [(OPS[op], self._row(sid)) for op, sid in calls]
        if len(rows) == 1:
            dur = self.times.pass_s(*rows[0])
        elif self.times.model is None:
            raise ValueError("batched passes need a profile (phase,batch,tokens,seconds rows)")
        else:
            dur = self.times.model.batch_s([self.times.jobs[st][r] for st, r in rows])
        self._realtime()
        hold_until(start + dur, self.spin_s)
        return [self._answer(op, r) for (op, _), (_, r) in zip(calls, rows)]

    def close(self) -> None:
        pass
