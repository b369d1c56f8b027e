"""`edgevlm serve`: the inference server of the two-stage protocol (DESIGN.md §4) over HTTP.

Endpoints (all answers JSON; times are the server's wall clock, time.time(), which every network
namespace of one machine shares, so edge and server stamps are comparable):
  GET  /v1/health                       model facts
  POST /v1/stage1?request_id&sample_id&image_w&image_h&question   body: the global JPEG
       -> answer, per-token uncertainty (s1_min_entropy, s1_shannon, s1_margin), recv_s, start_s, end_s
  POST /v1/attention   JSON {"request_id": int}  -> the relative-attention box in original pixels
  POST /v1/stage2?request_id            body: the local JPEG -> answer of global + local
Progressive levels are not served (see testbed/README.md).

The GPU is one worker thread taking passes in arrival order (FCFS, as the simulator's `fifo`
scheduler). Stage-1 requests are refused with 429 when `max_queue` passes already wait; follow-up
passes of an admitted request are never refused (as sim.engine.infer).
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request  # module level: FastAPI resolves the string annotations here
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from edgevlm.models.manifest import read_manifest
from edgevlm.testbed.engine import InlineEngine, ProcessEngine
from edgevlm.testbed.timed import SWITCH_INTERVAL_S, TimedEngine

STAGE1_PARAMS = ("request_id", "sample_id", "image_w", "image_h", "question")
MAX_SESSIONS = 4096
KEEP_ALIVE_S = 3600


@dataclass
class Session:
    global_img: Any
    question: str
    image_w: int
    image_h: int
    sample_id: str


class GpuWorker:
    """One thread runs model passes in FIFO order; `pending` counts queued + running passes."""

    def __init__(self):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpu")
        self.pending = 0
        self.lock = threading.Lock()

    async def run(self, fn, *args):
        with self.lock:
            self.pending += 1
        loop = asyncio.get_running_loop()

        def timed():
            start = time.time()
            try:
                out = fn(*args)
            finally:
                with self.lock:
                    self.pending -= 1
            return out, start, time.time()

        return await loop.run_in_executor(self.pool, timed)


class BatchWorker:
    """Static batching as the simulator's `static` scheduler does it (sim/server/batching.py): one thread
    waits for the first pass, then until `max_batch` passes wait or the first has waited `max_wait_s`,
    and runs up to `max_batch` of them as one batch (`TimedEngine.run_batch`); every pass of a batch
    starts and ends together. Timed engine only (a model's passes are not batched here)."""

    def __init__(self, engine, max_batch: int, max_wait_s: float):
        self.engine, self.max_batch, self.max_wait_s = engine, max_batch, max_wait_s
        self.queue: deque = deque()
        self.cv = threading.Condition()
        self.pending = 0
        self.batches: list[int] = []  # sizes, for tests and logs
        threading.Thread(target=self._loop, name="gpu-batch", daemon=True).start()

    async def run(self, fn, *args):
        """Like GpuWorker.run for an engine method `fn` whose last argument is the sample id."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self.cv:
            self.pending += 1
            self.queue.append((fn.__name__, args[-1], fut, loop, time.perf_counter()))
            self.cv.notify()
        return await fut

    def _loop(self) -> None:
        q = self.queue
        while True:
            with self.cv:
                while not q:
                    self.cv.wait()
                deadline = q[0][4] + self.max_wait_s
                while len(q) < self.max_batch and (left := deadline - time.perf_counter()) > 0:
                    self.cv.wait(left)
                batch = [q.popleft() for _ in range(min(len(q), self.max_batch))]
            start = time.time()
            try:
                outs = self.engine.run_batch([(op, sid) for op, sid, *_ in batch])
                end = time.time()
                results = [(o, start, end) for o in outs]
            except Exception as exc:  # every pass of the batch fails alike
                results = [exc] * len(batch)
            self.batches.append(len(batch))
            with self.cv:
                self.pending -= len(batch)
            for (_, _, fut, loop, _), r in zip(batch, results):
                loop.call_soon_threadsafe(_settle, fut, r)


def _settle(fut, result) -> None:
    if fut.cancelled():
        return
    if isinstance(result, Exception):
        fut.set_exception(result)
    else:
        fut.set_result(result)


def create_app(backend, *, sample_ids: set[str] | None = None, max_queue: int = 64,
               max_body_bytes: int = 4 << 20, max_batch: int = 1, max_wait_s: float = 0.0):
    """The FastAPI app serving `backend` (a models/ backend, or a testbed.engine engine).
    `sample_ids`: known ids (None accepts any). `max_batch` > 1 (timed engine only): static batches
    (BatchWorker), else one pass at a time in arrival order."""
    from PIL import Image  # defers PIL

    engine = backend if isinstance(backend, (InlineEngine, ProcessEngine, TimedEngine)) else InlineEngine(backend)
    if isinstance(engine, TimedEngine):  # it answers only the samples of its trace
        sample_ids = set(engine.row) if sample_ids is None else sample_ids & set(engine.row)
    app = FastAPI(title="edgevlm serve", docs_url=None, redoc_url=None)
    if max_batch > 1 and not isinstance(engine, TimedEngine):
        raise ValueError("max_batch > 1 needs the timed engine")
    gpu = BatchWorker(engine, max_batch, max_wait_s) if max_batch > 1 else GpuWorker()
    sessions: OrderedDict[int, Session] = OrderedDict()
    px = engine.vision_input_px

    class Reject(Exception):
        def __init__(self, status: int, msg: str):
            self.status, self.msg = status, msg

    @app.exception_handler(Reject)
    async def _reject(request, exc: Reject):
        return JSONResponse({"error": exc.msg}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        return JSONResponse({"error": f"invalid request: {exc.errors()[0].get('msg')}"}, status_code=400)

    async def body_bytes(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise Reject(413, f"body of {declared} bytes exceeds the limit of {max_body_bytes} bytes")
        chunks, n = [], 0
        async for chunk in request.stream():
            n += len(chunk)
            if n > max_body_bytes:
                raise Reject(413, f"body exceeds the limit of {max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def decode_jpeg(data: bytes, what: str):
        if not data:
            raise Reject(400, f"{what}: empty body; send a JPEG image (Content-Type: image/jpeg)")
        try:
            with Image.open(io.BytesIO(data)) as im:
                if im.format != "JPEG":
                    raise Reject(415, f"{what}: body is {im.format}, not JPEG")
                im.load()
                return im.convert("RGB")
        except Reject:
            raise
        except Exception as exc:  # PIL raises many kinds for junk
            raise Reject(415, f"{what}: body is not a decodable JPEG image ({type(exc).__name__})") from None

    def check_params(request: Request, allowed: tuple[str, ...]) -> dict[str, str]:
        q = dict(request.query_params)
        unknown = [k for k in q if k not in allowed]
        if unknown:
            raise Reject(400, f"unknown field '{unknown[0]}'; allowed fields: {', '.join(allowed)}")
        missing = [k for k in allowed if k not in q]
        if missing:
            raise Reject(400, f"missing field '{missing[0]}'; required: {', '.join(allowed)}")
        return q

    def int_param(q: dict, key: str, lo: int = 0) -> int:
        try:
            v = int(q[key])
        except ValueError:
            raise Reject(400, f"field '{key}' must be an integer, got {q[key]!r}") from None
        if v < lo:
            raise Reject(400, f"field '{key}' must be >= {lo}, got {v}")
        return v

    def session(rid: int) -> Session:
        s = sessions.get(rid)
        if s is None:
            raise Reject(404, f"unknown request_id {rid}: send /v1/stage1 for it first")
        return s

    @app.get("/v1/health")
    async def health():
        return {"ok": True, "model_id": engine.model_id, "vision_input_px": px,
                "visual_tokens_per_image": engine.visual_tokens_per_image, "pending": gpu.pending}

    @app.post("/v1/stage1")
    async def stage1(request: Request):
        recv_s = time.time()
        q = check_params(request, STAGE1_PARAMS)
        rid = int_param(q, "request_id")
        w, h = int_param(q, "image_w", 1), int_param(q, "image_h", 1)
        if sample_ids is not None and q["sample_id"] not in sample_ids:
            raise Reject(404, f"unknown sample_id {q['sample_id']!r}")
        if not q["question"].strip():
            raise Reject(400, "field 'question' must be a non-empty string")
        img = decode_jpeg(await body_bytes(request), "stage1")
        recv_s = time.time()
        if gpu.pending >= max_queue:
            raise Reject(429, f"server queue full ({max_queue} passes waiting); retry later")
        if img.size != (px, px):
            img = img.resize((px, px), Image.Resampling.BICUBIC)

        (text, mn, sh, mg), start, end = await gpu.run(engine.stage1, img, q["question"], q["sample_id"])
        sessions[rid] = Session(img, q["question"], w, h, q["sample_id"])
        while len(sessions) > MAX_SESSIONS:
            sessions.popitem(last=False)
        return {"request_id": rid, "answer": text, "tokens": len(mn), "s1_min_entropy": mn,
                "s1_shannon": sh, "s1_margin": mg, "recv_s": recv_s, "start_s": start, "end_s": end}

    @app.post("/v1/attention")
    async def attention(request: Request):
        raw = await body_bytes(request)
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise Reject(400, f"malformed JSON body ({exc})") from None
        if not isinstance(obj, dict):
            raise Reject(400, "body must be a JSON object {\"request_id\": int}")
        unknown = [k for k in obj if k != "request_id"]
        if unknown:
            raise Reject(400, f"unknown field '{unknown[0]}'; allowed fields: request_id")
        rid = obj.get("request_id")
        if not isinstance(rid, int) or isinstance(rid, bool):
            raise Reject(400, "field 'request_id' must be an integer")
        s = session(rid)

        box, start, end = await gpu.run(engine.attention_box, s.global_img, s.question, s.image_w, s.image_h,
                                         s.sample_id)
        return {"request_id": rid, "box": list(box), "start_s": start, "end_s": end}

    @app.post("/v1/stage2")
    async def stage2(request: Request):
        q = check_params(request, ("request_id",))
        rid = int_param(q, "request_id")
        s = session(rid)
        local = decode_jpeg(await body_bytes(request), "stage2")
        recv_s = time.time()
        if local.size != (px, px):
            local = local.resize((px, px), Image.Resampling.BICUBIC)

        (text, tokens), start, end = await gpu.run(engine.stage2, s.global_img, local, s.question, s.sample_id)
        sessions.pop(rid, None)
        return {"request_id": rid, "answer": text, "tokens": tokens, "recv_s": recv_s,
                "start_s": start, "end_s": end}

    app.state.gpu = gpu
    return app


def serve(model: str, host: str, port: int, *, manifest: str | None = None, max_queue: int = 64,
          max_body_bytes: int = 4 << 20, threads: int = 1, model_process: bool = False,
          model_cpus: list[int] | None = None, model_spin_s: float = 0.0, ready_file: str | None = None,
          timed: dict | None = None, max_batch: int = 1, max_wait_s: float = 0.0) -> None:
    """Load the model and serve until interrupted. `model_process`: run the passes in a process of their
    own (testbed.engine.ProcessEngine), pinned to `model_cpus` if given, busy-polling for the next pass
    for up to `model_spin_s` seconds after each. `timed`: TimedEngine.load's arguments (trace, quality,
    pass_times, visual_tokens): no model, passes held for the simulator's times (testbed/timed.py)."""
    import uvicorn  # defers uvicorn

    ids = None
    if manifest:
        ids = {s.sample_id for s in read_manifest(manifest)}
    if timed is not None:
        engine = TimedEngine.load(**timed)
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        print(f"edgevlm serve: timed engine ({engine.times.source}), answers from {timed['trace']}",
              file=sys.stderr, flush=True)
    elif model_process:
        engine = ProcessEngine(model, threads=threads, cpus=model_cpus, spin_s=model_spin_s)
        print(f"edgevlm serve: model process on CPUs {engine.cpus or 'any'}, memory "
              f"{'locked (mlockall)' if engine.mlocked else 'NOT locked (mlockall refused; pages may be reclaimed)'}",
              file=sys.stderr, flush=True)
    else:
        engine = InlineEngine.load(model, threads)
    try:
        app = create_app(engine, sample_ids=ids, max_queue=max_queue, max_body_bytes=max_body_bytes,
                         max_batch=max_batch, max_wait_s=max_wait_s)
        # Connections stay open as long as the edge keeps them (uvicorn closes one idle for 5 s by default:
        # a client idle that long then paid a new TCP handshake, or, racing the close, lost its request).
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False,
                    timeout_keep_alive=KEEP_ALIVE_S)
    finally:
        engine.close()
