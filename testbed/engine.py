"""The server's model passes (stage 1, attention box, stage 2), run inline or in a model process.

`InlineEngine` runs them in the server process, where the Python-heavy passes of a small model share
the GIL with the HTTP event loop. `ProcessEngine` runs them in a process of their own, optionally pinned
to CPUs the rest of the testbed keeps off, the way a GPU is a separate device: on a 2-core machine the
edge client and the event loop then cannot stretch a pass as the load grows (measured +5-12 % at rho
0.85 with the inline engine; see testbed/README.md)."""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing as mp
import os
import time
from typing import Any, Sequence

import numpy as np

from edgevlm.models.backend import load_backend
from edgevlm.models.boxsearch import search_box
from edgevlm.models.uncertainty import token_uncertainty
from edgevlm.sim.errors import UserError


class InlineEngine:
    """Passes in the calling process."""

    def __init__(self, backend):
        self.backend = backend
        self.model_id = backend.model_id
        self.vision_input_px = backend.vision_input_px
        self.visual_tokens_per_image = backend.visual_tokens_per_image

    def stage1(self, img, question: str, sample_id: str | None = None) -> tuple[str, list[float], list[float], list[float]]:
        """Answer on the global image and its per-token uncertainty (float32, as the trace stores it)."""

        be = self.backend
        gen = be.generate(be.encode([img], question))
        f32 = lambda a: [float(v) for v in np.asarray(a, dtype=np.float32)]  # noqa: E731
        return (gen.text, *(f32(a) for a in token_uncertainty(gen.logits)))

    def attention_box(self, img, question: str, image_w: int, image_h: int,
                      sample_id: str | None = None) -> tuple[int, int, int, int]:
        """The relative-attention box in original-image pixels."""

        be = self.backend
        maps = be.attention_to_image(img, question)
        box = search_box(maps.relative, image_w, image_h, self.vision_input_px, **be.settings.box_kwargs())
        return box.x0, box.y0, box.x1, box.y1

    def stage2(self, img, local, question: str, sample_id: str | None = None) -> tuple[str, int]:
        """Answer on global + local and its token count."""
        be = self.backend
        gen = be.generate(be.encode([img, local], question))
        return gen.text, len(gen.tokens)

    @classmethod
    def load(cls, model: str, threads: int) -> "InlineEngine":
        """The backend in `model` with `threads` torch threads and denormals flushed (small-model speed)."""
        import torch  # defers torch

        torch.set_num_threads(threads)
        torch.set_flush_denormal(True)
        return cls(load_backend(model))

    def close(self) -> None:
        pass


def _next_message(conn, spin_s: float):
    """The next message; for up to `spin_s` seconds busy-poll for it first, so a dedicated core never
    idles between passes that come close together (no wake-up latency, no cold core)."""
    if spin_s > 0:
        end = time.perf_counter() + spin_s
        while not conn.poll(0):
            if time.perf_counter() > end:
                break
    return conn.recv()


def _lock_memory() -> bool:
    """mlockall(MCL_CURRENT | MCL_FUTURE): keep the process's pages, its libraries' code included, resident,
    as a GPU's memory is. On a host that reclaims idle pages proactively (this one runs DAMON `pageout`
    on pages idle for ~6 s), an unlocked model process can stall mid-pass re-reading evicted code or
    weights. False where not allowed (no root, RLIMIT_MEMLOCK)."""

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.mlockall(1 | 2) == 0
    except (OSError, AttributeError):
        return False


def _model_main(conn, model: str, threads: int, cpus: Sequence[int] | None, spin_s: float = 0.0) -> None:
    """The model process: load the backend, then answer (op, args) messages until None."""
    try:
        if cpus:
            os.sched_setaffinity(0, set(cpus))
        eng = InlineEngine.load(model, threads)
        conn.send(("ready", {"model_id": eng.model_id, "vision_input_px": eng.vision_input_px,
                             "visual_tokens_per_image": eng.visual_tokens_per_image, "mlocked": _lock_memory()}))
    except Exception as exc:  # reported to the parent, which raises it there
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    while (msg := _next_message(conn, spin_s)) is not None:
        op, args = msg
        try:
            conn.send(("ok", getattr(eng, op)(*args)))
        except Exception as exc:
            conn.send(("error", f"{op}: {type(exc).__name__}: {exc}"))


class ModelProcessError(RuntimeError):
    """The model process failed to start or to run a pass."""


def cpus_problem(cpus: Sequence[int]) -> str | None:
    """Why `cpus` cannot host the model process (None if they can). Checked against the machine's CPUs,
    not this process's affinity: the server itself may be pinned to the others."""
    allowed = list(range(os.cpu_count() or 1))
    bad = [c for c in cpus if c not in allowed]
    if cpus and not bad:
        return None
    return f"CPU {bad[0] if bad else '[]'} is not available; allowed: {', '.join(map(str, allowed))}"


def parse_cpus(text: str, field: str) -> list[int]:
    """'1' or '0,2' -> CPU numbers; a clear error naming `field` otherwise."""

    try:
        cpus = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise UserError(f"{field}: expected CPU numbers like '1' or '0,1', got {text!r}") from None
    if problem := cpus_problem(cpus):
        raise UserError(f"{field}: {problem}")
    return cpus


class ProcessEngine:
    """Passes in a spawned model process (pinned to `cpus` if given). Calls must come from one thread
    at a time (the server's single GPU thread), which keeps them in FIFO order."""

    def __init__(self, model: str, *, threads: int = 1, cpus: Sequence[int] | None = None, spin_s: float = 0.0,
                 timeout_s: float = 300):

        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_model_main, args=(child, model, threads, list(cpus or []), spin_s), daemon=True,
                                 name="edgevlm-model")
        self._proc.start()
        child.close()
        if not self._conn.poll(timeout_s):
            self.close()
            raise ModelProcessError(f"model process did not load {model} within {timeout_s:.0f} s")
        status, facts = self._recv()
        if status != "ready":
            self.close()
            raise ModelProcessError(f"model process failed to load {model}: {facts}")
        self.model_id = facts["model_id"]
        self.vision_input_px = facts["vision_input_px"]
        self.visual_tokens_per_image = facts["visual_tokens_per_image"]
        self.cpus = list(cpus or [])
        self.mlocked = bool(facts.get("mlocked"))

    def _recv(self) -> tuple[str, Any]:
        try:
            return self._conn.recv()
        except EOFError:
            raise ModelProcessError(f"model process exited (code {self._proc.exitcode})") from None

    def _call(self, op: str, *args):
        self._conn.send((op, args))
        status, out = self._recv()
        if status != "ok":
            raise ModelProcessError(f"model process: {out}")
        return out

    def stage1(self, img, question: str, sample_id: str | None = None):
        return tuple(self._call("stage1", img, question))

    def attention_box(self, img, question: str, image_w: int, image_h: int, sample_id: str | None = None):
        return tuple(self._call("attention_box", img, question, image_w, image_h))

    def stage2(self, img, local, question: str, sample_id: str | None = None):
        return tuple(self._call("stage2", img, local, question))

    def close(self) -> None:
        if self._proc.is_alive():
            try:
                self._conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join()
