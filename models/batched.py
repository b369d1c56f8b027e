"""Batched extraction: several samples' stage 1, attention passes and stage 2 run as batches.

The per-sample pipeline stays `extract.process_sample`, unchanged: each sample of a batch runs it in
its own worker thread against a `_Deferred` backend, whose model calls (generate, attention) do not run
at once but wait at a rendezvous. When every worker is waiting (or done), the calling thread runs
all waiting calls of a kind together: the images' visual features in one vision pass, the prompts
left-padded into one `generate_batch`, the question and generic attention passes in one forward.
Samples proceed in lock step (stage 1, attention, stage 2 with the oracle pass: process_sample asks
for those two answers together by `generate_each`), so a batch of B samples makes about three batched
model calls instead of 4B single ones; with a backend that shares the global
image's key/value prefix (hf_base `share_prefix`, LLaVA), the prompt tokens up to the end of the
global image are run once per sample, not five times. Image work (resizing, JPEG, box search)
stays in the workers; all torch work runs in the calling thread, in a fixed order (by sample), so
results are deterministic and equal to one-at-a-time extraction up to float rounding (tested:
answers, uncertainties to 1e-5, boxes). Timings in a batched trace are those of the batched calls.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Sequence

from edgevlm.models.backend import AttentionMaps, BackendSettings, Encoded, Generation, VLMBackend


@dataclass
class _Pending(Encoded):
    """An encode() not run yet: what to encode; the executor fills in the real Encoded fields."""

    images: list = field(default_factory=list)
    question: str = ""
    add_suffix: bool = True


@dataclass
class _Call:
    kind: str                      # "generate" | "attention"
    args: tuple
    result: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class _Rendezvous:
    """Workers post one call each and wait; the executor takes the calls once all live workers wait."""

    def __init__(self, n_workers: int):
        self.cv = threading.Condition()
        self.pending: dict[int, _Call] = {}
        self.live = n_workers

    def call(self, worker: int, kind: str, *args) -> Any:
        c = _Call(kind, args)
        with self.cv:
            self.pending[worker] = c
            self.cv.notify_all()
        c.done.wait()
        if c.error is not None:
            raise c.error
        return c.result

    def leave(self) -> None:
        with self.cv:
            self.live -= 1
            self.cv.notify_all()

    def take(self) -> list[tuple[int, _Call]] | None:
        """All waiting calls in worker order once every live worker waits; None when all are done."""
        with self.cv:
            self.cv.wait_for(lambda: self.live == 0 or len(self.pending) == self.live)
            if self.live == 0:
                return None
            calls = sorted(self.pending.items())
            self.pending.clear()
            return calls


class _Deferred(VLMBackend):
    """The backend as one worker sees it: settings and geometry of the real one; model calls deferred."""

    def __init__(self, real: VLMBackend, meet: _Rendezvous, worker: int):
        self.real, self.meet, self.worker = real, meet, worker
        self.name, self.settings, self.model_id = real.name, real.settings, real.model_id

    @classmethod
    def load(cls, path, *, device="cpu", settings: BackendSettings | None = None, overrides=None):
        raise NotImplementedError("a deferred backend wraps a loaded one")

    @property
    def vision_input_px(self) -> int:
        return self.real.vision_input_px

    @property
    def attention_layer(self) -> int:
        return self.real.attention_layer

    def visual_grid(self) -> tuple[int, int]:
        return self.real.visual_grid()

    def encode(self, images: Sequence[Any], question: str, *, add_suffix: bool = True) -> Encoded:
        return _Pending(inputs={}, image_positions=[], prompt_tokens=-1, n_images=len(images),
                        images=list(images), question=question, add_suffix=add_suffix)

    def generate(self, encoded: Encoded, max_new_tokens: int | None = None) -> Generation:
        return self.generate_each([encoded], max_new_tokens)[0]

    def generate_each(self, encodeds: Sequence[Encoded], max_new_tokens: int | None = None) -> list[Generation]:
        return self.meet.call(self.worker, "generate", list(encodeds), max_new_tokens)

    def attention_to_image(self, image: Any, question: str) -> AttentionMaps:
        return self.meet.call(self.worker, "attention", image, question)


def _execute(backend: VLMBackend, calls: list[tuple[int, _Call]]) -> None:
    """Run one round of waiting calls, batched by kind; errors go back to the calls they belong to."""
    images: list[Any] = []
    for _, c in calls:
        for img in ([i for p in c.args[0] for i in p.images] if c.kind == "generate" else [c.args[0]]):
            if all(img is not seen for seen in images):
                images.append(img)
    try:
        backend.prefetch(images)
    except Exception as exc:  # noqa: BLE001 - handed to every worker of the round
        for _, c in calls:
            c.error = exc
        return
    gens = [c for _, c in calls if c.kind == "generate"]
    by_limit: dict[Any, list[_Call]] = {}
    for c in gens:
        by_limit.setdefault(c.args[1], []).append(c)
    for limit, group in by_limit.items():
        try:
            encs = []
            for c in group:
                for p in c.args[0]:
                    real = backend.encode(p.images, p.question, add_suffix=p.add_suffix)
                    for f in fields(Encoded):
                        setattr(p, f.name, getattr(real, f.name))
                    encs.append(real)
            gens = iter(backend.generate_batch(encs, limit))
            for c in group:
                c.result = [next(gens) for _ in c.args[0]]
        except Exception as exc:  # noqa: BLE001
            for c in group:
                c.error = exc
    atts = [c for _, c in calls if c.kind == "attention"]
    if atts:
        try:
            for c, m in zip(atts, backend.attention_batch([c.args[0] for c in atts], [c.args[1] for c in atts])):
                c.result = m
        except Exception as exc:  # noqa: BLE001
            for c in atts:
                c.error = exc


def process_batch(backend: VLMBackend, samples: Sequence[Any], opts: Any,
                  process_sample: Callable[[VLMBackend, Any, Any], dict[str, Any]]
                  ) -> tuple[list[dict[str, Any]], BaseException | None]:
    """Rows of `samples` in order, computed together; stops at the first failed sample and returns
    the rows before it with that error (rows after it are dropped; a resumed run redoes them)."""
    if len(samples) == 1:
        try:
            return [process_sample(backend, samples[0], opts)], None
        except Exception as exc:  # noqa: BLE001
            return [], exc
    meet = _Rendezvous(len(samples))
    results: list[Any] = [None] * len(samples)

    def work(k: int) -> None:
        try:
            results[k] = process_sample(_Deferred(backend, meet, k), samples[k], opts)
        except BaseException as exc:  # noqa: BLE001 - reported in sample order below
            results[k] = exc
        finally:
            meet.leave()

    threads = [threading.Thread(target=work, args=(k,), daemon=True, name=f"extract-{k}")
               for k in range(len(samples))]
    for t in threads:
        t.start()
    cache = getattr(backend, "FEATURE_CACHE_SIZE", None)
    if cache is not None:          # keep every image of the batch cached across its rounds
        backend.FEATURE_CACHE_SIZE = max(cache, 4 * len(samples))
    try:
        while (calls := meet.take()) is not None:
            try:
                _execute(backend, calls)
            except BaseException as exc:  # never leave a worker waiting
                for _, c in calls:
                    c.error = c.error or (None if c.result is not None else exc)
                raise
            finally:
                for _, c in calls:
                    c.done.set()
    finally:
        if cache is not None:
            backend.FEATURE_CACHE_SIZE = cache
        for t in threads:
            t.join()
    rows = []
    for r in results:
        if isinstance(r, BaseException):
            return rows, r
        rows.append(r)
    return rows, None
