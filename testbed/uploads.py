"""Many clients uploading image-sized bodies over HTTP through the shared uplink: does processor
sharing describe TCP here? (`bench/testbed_tcp.py` runs it; `compare_uploads` gives the table.)

- **Sink** (`python -m edgevlm.testbed.uploads sink HOST PORT OUT.json`, in the server namespace): a
  minimal asyncio HTTP/1.1 server; per `POST /u?id=N` it stamps when the body's last byte arrived
  (time.time(); every namespace of one machine shares that clock) and answers `200 ok`.
- **Clients** (`... clients SCHEDULE.json HOST PORT OUT.json`, in the client namespace): N clients,
  each with its own persistent connections (opened before the clock starts, `conns_per_client` each;
  a request finding none idle opens one more, handshake included, as a browser or httpx would; the
  congestion control is the host's default, here `bbr`, or set per socket, e.g. `cubic`). Each
  transfer of the schedule is sent at its time; its start is stamped just before the write.
- A transfer's **completion time** is the sink's stamp minus the client's: the upload alone (the
  simulator's uplink transfer + one-way propagation), not the response.
- **Simulator**: the same arrivals and HTTP message sizes (request line + headers + body) on a
  `sim.network` link (`ps` by default) with the same capacity and one-way delay, with or without a
  transport model (`simulate_uploads`).

Bodies are random bytes of the trace's JPEG sizes (nothing on the path compresses, so only sizes
matter to the network), not the images themselves.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import simpy

from edgevlm.sim.network import LinkConfig, build_link


def request_head(rid: int, nbytes: int, host: str) -> bytes:
    """The HTTP/1.1 request line and headers of one upload (what the sizes of both systems count)."""
    return (f"POST /u?id={rid} HTTP/1.1\r\nHost: {host}\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {nbytes}\r\n\r\n").encode()


# ---------------------------------------------------------------- the sink


async def _sink(host: str, port: int, stamps: list) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                first, *lines = head.decode().split("\r\n")
                rid = int(first.split()[1].split("id=")[1])
                n = next(int(l.split(":")[1]) for l in lines if l.lower().startswith("content-length"))
                await reader.readexactly(n)
                stamps.append((rid, time.time(), n + len(head)))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, host, port, backlog=4096)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


def sink_main(host: str, port: int, out: str) -> int:
    stamps: list = []
    loop = asyncio.new_event_loop()
    task = loop.create_task(_sink(host, port, stamps))
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        loop.run_until_complete(task)
    except asyncio.CancelledError:
        pass
    Path(out).write_text(json.dumps(stamps))
    return 0


# ---------------------------------------------------------------- the clients


class _Client:
    """One client's persistent connections to the sink."""

    def __init__(self, host: str, port: int, congestion_control: str | None = None):
        self.host, self.port, self.cc = host, port, congestion_control
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0

    async def open(self):
        self.opened += 1
        reader, writer = await asyncio.open_connection(self.host, self.port)
        if self.cc:  # per socket: this host's namespaces may not change the sysctl default (bbr here)
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, self.cc.encode())
        return reader, writer

    async def upload(self, rid: int, body: bytes) -> tuple[float, float]:
        conn = self.idle.pop() if self.idle else await self.open()
        reader, writer = conn
        start = time.time()
        writer.write(request_head(rid, len(body), self.host) + body)
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        self.idle.append(conn)
        return start, time.time()


async def _clients(schedule: dict, host: str, port: int) -> dict[str, Any]:
    n = schedule["clients"]
    clients = [_Client(host, port, schedule.get("congestion_control")) for _ in range(n)]
    for c in clients:  # connections opened before the clock starts
        c.idle = list(await asyncio.gather(*(c.open() for _ in range(schedule["conns_per_client"]))))
    bodies = {}
    out: list = []
    t0 = time.time() + 0.5

    async def one(rid: int, client: int, at_s: float, nbytes: int):
        body = bodies.setdefault(nbytes, os.urandom(nbytes))
        delay = t0 + at_s - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        start, done = await clients[client].upload(rid, body)
        out.append((rid, start - t0, done - t0))

    await asyncio.gather(*(one(*a) for a in schedule["transfers"]))
    for c in clients:
        for _, w in c.idle:
            w.close()
    return {"t0": t0, "transfers": out, "connections_opened": sum(c.opened for c in clients)}


def clients_main(schedule_path: str, host: str, port: int, out: str) -> int:
    res = asyncio.run(_clients(json.loads(Path(schedule_path).read_text()), host, port))
    Path(out).write_text(json.dumps(res))
    return 0


# ---------------------------------------------------------------- schedules, simulation, comparison


def make_schedule(sizes: np.ndarray, kinds: np.ndarray, *, clients: int, load: float, capacity_mbps: float,
                  transfers: int, seed: int, conns_per_client: int = 2,
                  congestion_control: str | None = None) -> dict[str, Any]:
    """Poisson arrivals at `load` x the uplink's capacity in HTTP bytes; each transfer a uniformly drawn
    (size, kind) row and client."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(sizes), transfers)
    head = len(request_head(10 ** 6, 20_000, "10.213.100.1"))
    rate = load * capacity_mbps * 1e6 / 8 / (float(np.mean(sizes)) + head)
    at = np.cumsum(rng.exponential(1 / rate, transfers))
    who = rng.integers(0, clients, transfers)
    return {"clients": clients, "conns_per_client": conns_per_client, "rate_per_s": rate,
            "congestion_control": congestion_control,
            "transfers": [[k, int(who[k]), float(at[k]), int(sizes[r])] for k, r in enumerate(rows)],
            "kinds": [str(kinds[r]) for r in rows]}


def simulate_uploads(schedule: dict, host: str, link: dict) -> np.ndarray:
    """Completion time of every transfer (upload + one-way propagation) on a simulator link built from
    `link` (a network.uplink block; overhead 0: the HTTP head is in the message size); each client is
one flow (for a transport model's idle restarts)."""
    env = simpy.Environment()
    ln = build_link(env, LinkConfig(**{"overhead_bytes": 0, **link}))
    done = np.full(len(schedule["transfers"]), np.nan)

    def go(rid: int, client: int, at: float, nbytes: int):
        yield env.timeout(at)
        yield from ln.transfer(nbytes + len(request_head(rid, nbytes, host)), None, client)
        done[rid] = env.now - at

    for rid, client, at, nbytes in schedule["transfers"]:
        env.process(go(rid, client, at, nbytes))
    env.run()
    return done


def run_uploads(ns, schedule: dict, workdir: Path, port: int = 9100, timeout_s: float = 300) -> np.ndarray:
    """Run `schedule` on the namespaces `ns` (testbed.netns.Netns): the sink in the server namespace,
    the clients in the client namespace; returns each transfer's measured completion time."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "schedule.json").write_text(json.dumps(schedule))
    py = [sys.executable, "-m", "edgevlm.testbed.uploads"]
    sink = subprocess.Popen(ns.exec_prefix(ns.server) + py + ["sink", ns.server_ip, str(port), str(workdir / "sink.json")],
                            stdout=subprocess.PIPE, text=True)
    try:
        if sink.stdout.readline().strip() != "listening":
            raise RuntimeError("the upload sink did not start")
        subprocess.run(ns.exec_prefix(ns.client) + py + ["clients", str(workdir / "schedule.json"), ns.server_ip,
                                                         str(port), str(workdir / "clients.json")],
                       check=True, timeout=timeout_s)
    finally:
        sink.terminate()
        sink.wait(30)
    return measured(schedule, json.loads((workdir / "clients.json").read_text()),
                    json.loads((workdir / "sink.json").read_text()))


def measured(schedule: dict, clients_out: dict, stamps: list) -> np.ndarray:
    """Per transfer: the sink's stamp minus the client's start (NaN where one is missing)."""
    t0 = clients_out["t0"]
    start = {rid: s for rid, s, _ in clients_out["transfers"]}
    got = {rid: t - t0 for rid, t, _ in stamps}
    return np.array([got.get(k, np.nan) - start.get(k, np.nan) for k in range(len(schedule["transfers"]))])


def bucket_stats(times: np.ndarray, kinds: list[str]) -> dict[str, dict[str, float]]:
    """Mean and p95 completion time per size bucket (the kinds) and over all."""
    kinds = np.asarray(kinds)
    out = {}
    for b in [*sorted(set(kinds.tolist())), "all"]:
        t = times[(kinds == b) if b != "all" else slice(None)]
        t = t[np.isfinite(t)]
        out[b] = {"n": int(t.size), "mean_s": float(np.mean(t)) if t.size else None,
                  "p95_s": float(np.percentile(t, 95)) if t.size else None}
    return out


def _realtime() -> None:
    """The measuring processes at real-time priority where allowed (root), as the delay line: their
    time stamps are the measurement, and this host's other jobs must not delay them."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    except (PermissionError, OSError, AttributeError):
        pass


if __name__ == "__main__":
    _realtime()
    cmd, *rest = sys.argv[1:]
    if cmd == "sink":
        sys.exit(sink_main(rest[0], int(rest[1]), rest[2]))
    if cmd == "clients":
        sys.exit(clients_main(rest[0], rest[1], int(rest[2]), rest[3]))
    sys.exit(f"usage: python -m edgevlm.testbed.uploads sink HOST PORT OUT | clients SCHEDULE HOST PORT OUT")
