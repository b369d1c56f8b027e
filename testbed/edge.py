"""`edgevlm edge`: a real edge client of the two-stage protocol (DESIGN.md §4).

It replays a schedule of (request_id, client_id, sample, arrival_s), or a Poisson stream, against a
running `edgevlm serve`. Per request: resize + JPEG-encode the original at the policy's quality
(edge prep), send stage 1, decide with the SAME policy object the simulator builds (sim.policies
registry, `decide_live` on the live per-token uncertainty), and on a crop ask for the attention box,
crop the full-resolution original, encode, send stage 2. Every request lands in an event log with
the simulator's schema (sim/recorder.py). Bytes are HTTP message bytes: request/status line,
headers and body (TCP/IP headers and handshakes are not counted).

All clients run as asyncio tasks of one process (one client namespace in the testbed); each client
has its own pool of HTTP connections (uncapped: a request never waits for an earlier one's connection),
so requests of different clients never share a TCP stream.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow.parquet as pq
from pydantic import TypeAdapter, ValidationError

from edgevlm.sim.engine import Request
from edgevlm.sim.errors import ConfigError
from edgevlm.sim.policies import policies
from edgevlm.sim.recorder import EventLog
from edgevlm.sim.workload import Workload
from edgevlm.traces.io import atomic_write

NAN = math.nan


@dataclass
class Arrival:
    request_id: int
    client_id: int
    sample: int          # index into the manifest
    arrival_s: float     # offset from the run's start


def http_bytes(resp) -> tuple[int, int]:
    """(request bytes, response bytes) of one HTTP/1.1 exchange: start line + headers + body."""
    req = resp.request
    up = len(f"{req.method} {req.url.raw_path.decode()} HTTP/1.1\r\n")
    up += sum(len(k) + len(v) + 4 for k, v in req.headers.raw) + 2 + len(req.content)
    down = len(f"HTTP/1.1 {resp.status_code} {resp.reason_phrase}\r\n")
    down += sum(len(k) + len(v) + 4 for k, v in resp.headers.raw) + 2 + len(resp.content)
    return up, down


def build_policy(policy: dict, trace_path: str | Path, seed: int = 0):
    """The simulator's policy object for `policy` (a scenario `policy` block) over the trace."""

    try:
        cfg = TypeAdapter(policies.config_union()).validate_python(policy)
    except ValidationError as exc:
        e = exc.errors()[0]
        raise ConfigError("policy." + ".".join(str(p) for p in e["loc"][1:]), e["msg"]) from None
    workload = Workload.load(trace_path).for_policy(cfg)
    return policies.build(cfg, workload, np.random.default_rng(seed))


#: Connections each client opens before the run and keeps (a browser keeps up to 6 per host). A request
#: sent while all of its client's connections are busy opens a new one, paying a TCP handshake (one RTT)
#: that the simulator does not model: with one warm connection, 4-8 % of requests at 32 clients did
#: (those sent within ~60 ms of the same client's previous one), +30 ms each at 30 ms RTT.
WARM_CONNECTIONS = 6


async def run_edge(base_url: str, samples: Sequence[Any], policy, arrivals: Sequence[Arrival], *,
                   vision_px: int, n_clients: int, timeout_s: float = 120.0,
                   health_timeout_s: float = 60.0, t0: float | None = None) -> tuple[list[Request], dict[str, Any]]:
    """Run the schedule; returns the finished requests and edge-side measurements."""
    import httpx  # defers httpx

    from edgevlm.models.extract import RESAMPLE, load_image  # defers PIL
    from edgevlm.models.jpeg import jpeg_encode  # defers PIL

    originals = [load_image(s) for s in samples]
    quality = policy.cfg.jpeg_quality
    score1, score2 = policy.score1, policy.score2
    # No cap on a client's connections: a simulated client never holds a request back for an earlier one
    # (a cap of 4 delayed 6 % of uploads by 30-130 ms at rho 0.85, waiting for a free connection).
    # No keep-alive expiry either (httpx closes a connection idle for 5 s by default): with 32 clients each
    # sends every ~6 s, and half the uploads paid a TCP handshake (one RTT) the simulator does not model.
    unlimited = httpx.Limits(max_connections=None, max_keepalive_connections=None, keepalive_expiry=None)
    clients = [httpx.AsyncClient(base_url=base_url, timeout=timeout_s, limits=unlimited) for _ in range(n_clients)]
    prep_times, crop_times, errors, attention = [], [], [], []
    done: list[Request] = []
    end = time.time() + health_timeout_s
    while True:  # wait for the server, and open each client's warm connections before the clock starts
        try:
            # all at once: one client after the other took 18 s for 128 clients on the cellular trace
            for r in await asyncio.gather(*(c.get("/v1/health") for c in clients for _ in range(WARM_CONNECTIONS))):
                r.raise_for_status()
            break
        except httpx.HTTPError as exc:
            if time.time() > end:
                for c in clients:
                    await c.aclose()
                raise RuntimeError(f"server {base_url} not healthy after {health_timeout_s:g} s ({exc})") from None
            await asyncio.sleep(0.3)
    if t0 is None:
        t0 = time.time()
    elif time.time() > t0:
        for c in clients:
            await c.aclose()
        raise RuntimeError(f"the edge was ready {time.time() - t0:.2f} s after the run's start time (--t0); "
                           "give it more time to start")

    async def one(a: Arrival):
        delay = t0 + a.arrival_s - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        r = Request(a.request_id, a.client_id, a.sample, a.arrival_s)  # the simulator's own record
        http = clients[a.client_id % n_clients]
        s, orig = samples[a.sample], originals[a.sample]
        try:
            t = time.time()
            jpeg = jpeg_encode(orig.resize((vision_px, vision_px), RESAMPLE), quality)
            r.edge_done_s = time.time() - t0
            prep_times.append(r.edge_done_s + t0 - t)
            resp = await http.post("/v1/stage1", content=jpeg, headers={"content-type": "image/jpeg"},
                                   params={"request_id": a.request_id, "sample_id": s.sample_id,
                                           "image_w": orig.size[0], "image_h": orig.size[1],
                                           "question": s.question})
            up, down = http_bytes(resp)
            r.uplink_bytes += up
            r.downlink_bytes += down
            if resp.status_code == 429:
                r.status = "dropped"
                r.done_s = time.time() - t0
                done.append(r)
                return
            resp.raise_for_status()
            j = resp.json()
            r.up1_end_s, r.s1_start_s, r.s1_end_s = j["recv_s"] - t0, j["start_s"] - t0, j["end_s"] - t0
            r.stages, r.score = 1, score1[a.sample]
            if policy.decide_live(j):
                resp = await http.post("/v1/attention", json={"request_id": a.request_id})
                up, down = http_bytes(resp)
                r.uplink_bytes += up
                r.downlink_bytes += down
                resp.raise_for_status()
                r.crop_req_end_s = time.time() - t0
                t = time.time()
                jb = resp.json()
                attention.append({"request_id": a.request_id, "sample": a.sample,
                                  "start_s": jb["start_s"] - t0, "end_s": jb["end_s"] - t0})
                x0, y0, x1, y1 = jb["box"]
                local = jpeg_encode(orig.crop((x0, y0, x1, y1)).resize((vision_px, vision_px), RESAMPLE), quality)
                crop_times.append(time.time() - t)
                resp = await http.post("/v1/stage2", content=local, headers={"content-type": "image/jpeg"},
                                       params={"request_id": a.request_id})
                up, down = http_bytes(resp)
                r.uplink_bytes += up
                r.downlink_bytes += down
                resp.raise_for_status()
                j = resp.json()
                r.up2_end_s, r.s2_start_s, r.s2_end_s = j["recv_s"] - t0, j["start_s"] - t0, j["end_s"] - t0
                r.stages, r.score = 2, score2[a.sample]
            r.done_s = time.time() - t0
        except Exception as exc:  # a failed request is recorded, never silently lost
            errors.append(f"request {a.request_id}: {type(exc).__name__}: {exc}")
            r.status = "dropped"
            r.score = NAN
            r.done_s = time.time() - t0
        done.append(r)

    try:
        await asyncio.gather(*(one(a) for a in arrivals))
    finally:
        for c in clients:
            await c.aclose()
    info = {"edge_prep_s": float(np.mean(prep_times)) if prep_times else None,
            "edge_crop_s": float(np.mean(crop_times)) if crop_times else None,
            "errors": errors, "t0": t0, "attention_passes": attention}
    return done, info


def write_events(done: Sequence[Request], sample_ids: Sequence[str], policy_name: str, path: Path,
                 deadline_s: float = 2.0):
    """Write the requests as a DESIGN §5 event log (sorted by request id); returns the table."""

    log = EventLog(np.asarray(sample_ids, dtype=object), policy_name, deadline_s)
    for r in sorted(done, key=lambda r: r.request_id):
        log(r)
    table = log.close()
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    return table
