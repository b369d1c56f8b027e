"""TESTBED.yaml: what `edgevlm testbed` and `edgevlm validate` run (pydantic, unknown keys are errors).

Example (testbed/examples/ci.yaml):
  name: ci
  model: null              # checkpoint dir; null: models/weights/tiny-scenetext-v1 if present
  manifest: data/vqa.jsonl # dataset manifest (models/manifest.py), relative to this file
  trace: null              # trace of the manifest by the same model; null: extracted into the output dir
  clients: 2               # client workers (asyncio tasks in one client namespace, own connections each)
  requests: 30             # requests per (load, policy) point and round
  min_point_s: 0           # ... or more, so that each point lasts at least this many seconds of arrivals
  rounds: 1                # runs of every point, interleaved, each round freshly calibrated; pooled
  replays: 1               # testbed runs of each point's arrivals (extra ones measure its repeatability)
  loads: [0.5]             # offered load rho = lambda / measured server capacity
  policies: [{kind: global_only, jpeg_quality: 75}]
  network:
    uplink: {capacity_mbps: 4, propagation_ms: 0, loss_pct: 0, discipline: ps, access_mbps: null}  # or bandwidth_trace: FILE
    downlink: {capacity_mbps: 20, propagation_ms: 0}
  server: {engine: model, max_queue: 1000, threads: 1, model_process: true, model_cpus: null, model_spin_s: 5}  # null: last CPU
  calibration: {repeats: 3, idle_requests: 32, server_passes: idle, server_speed: lognormal}  # idle | busy: where the pass times
                           # come from; lognormal | constant: the simulator's server speed model
  time_limit_s: 120        # per point: the edge run is stopped after this
  seed: 0
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import Field, PositiveFloat, PositiveInt, ValidationError, model_validator

from edgevlm.sim.bandwidth import parse_mahimahi
from edgevlm.sim.errors import ConfigError
from edgevlm.sim.registry import Strict
from edgevlm.testbed.engine import cpus_problem
from edgevlm.testbed.netns import Shape

DEFAULT_MODEL = Path("models/weights/tiny-scenetext-v1")


class Direction(Strict):
    capacity_mbps: Optional[PositiveFloat] = None
    #: a Mahimahi trace file instead of a constant capacity: the testbed's delay line releases packets on
    #: its delivery opportunities, the simulator's link replays it (`mahimahi`); both start it at the
    #: point's first arrival (relative paths: against TESTBED.yaml's folder)
    bandwidth_trace: Optional[str] = None
    #: one-way propagation: the delay line on the testbed (this kernel has no netem)
    propagation_ms: float = Field(0.0, ge=0)
    loss_pct: float = Field(0.0, ge=0, lt=100)
    #: the simulator's discipline for this link: the delay line is one FIFO packet queue, so messages that
    #: fit in TCP's window leave in FIFO order (fifo), larger ones from several flows interleave (ps)
    discipline: Literal["ps", "fifo"] = "ps"
    #: per-client access links (uplink only): each client connection first crosses its own hop at this
    #: rate, then the shared link above (the delay line; the simulator's `link_classes` uplink_mbps)
    access_mbps: Optional[PositiveFloat] = None

    @model_validator(mode="after")
    def _one_rate(self):
        if (self.capacity_mbps is None) == (self.bandwidth_trace is None):
            raise ValueError("give exactly one of 'capacity_mbps' or 'bandwidth_trace'")
        return self

    def shape(self) -> Shape:
        """The testbed's shaping of this direction."""
        return Shape(self.capacity_mbps or 0.0, self.propagation_ms, self.loss_pct, trace=self.bandwidth_trace,
                     access_mbps=self.access_mbps)

    def mean_bps(self) -> float:
        """The capacity, or the trace's mean rate."""
        if self.bandwidth_trace is None:
            return self.capacity_mbps * 1e6
        return parse_mahimahi(self.bandwidth_trace).mean_bps

    def sim_link(self) -> dict[str, Any]:
        """The simulator link's capacity keys (`capacity_mbps`, or a `mahimahi` bandwidth_trace)."""
        if self.bandwidth_trace is None:
            return {"capacity_mbps": self.capacity_mbps, "discipline": self.discipline}
        return {"bandwidth_trace": {"kind": "mahimahi", "path": self.bandwidth_trace}, "discipline": self.discipline}


class Network(Strict):
    uplink: Direction = Direction(capacity_mbps=4.0)
    downlink: Direction = Direction(capacity_mbps=20.0)

    @model_validator(mode="after")
    def _access_up_only(self):
        if self.downlink.access_mbps is not None:
            raise ValueError("downlink.access_mbps: access links are modelled on the uplink only "
                             "(the simulator's link_classes uplink_mbps); remove it")
        return self


class ServerBlock(Strict):
    #: model: the tiny model's real passes (in the model process or inline); timed: no model, each pass
    #: held for the simulator's time of that sample (the round's profile) and answered from the trace,
    #: a stand-in for a dedicated accelerator's steady pass times (testbed/timed.py)
    engine: Literal["model", "timed"] = "model"
    max_queue: PositiveInt = 1000
    threads: PositiveInt = Field(1, description="torch threads of the server process")
    port: int = Field(8000, ge=1, le=65535)
    #: the passes in a process of their own, pinned to `model_cpus` (default: the last CPU when there are
    #: >= 2), with the server's event loop and the edge client on the other CPUs: the stand-in for a GPU,
    #: which no HTTP stack or edge shares (see testbed/README.md). false: passes in the server process.
    model_process: bool = True
    model_cpus: Optional[list[int]] = None
    #: the model process busy-polls up to this long after a pass for the next one: a core that idles
    #: between passes ran them up to 16 % slower (testbed/README.md)
    model_spin_s: float = Field(5.0, ge=0)


class Calibration(Strict):
    repeats: PositiveInt = 3
    #: idle requests per kind (global_only, always_crop) for the network path's fixed time per message
    #: (a median); at least twice the samples. 16 moved the median by 5-8 ms between runs on a loaded host
    idle_requests: PositiveInt = 32
    #: the server's pass times for the profile: from idle requests one at a time, or from a run that
    #: keeps the server busy (arrivals at 1.5x capacity); see testbed/README.md
    server_passes: Literal["idle", "busy"] = "idle"
    #: lognormal: fit the server's per-pass jitter and speed drift from the calibration's passes, give the
    #: simulator that speed model (server.speed) and mean pass times; constant: typical (median) pass
    #: times, no variability (see testbed/README.md)
    server_speed: Literal["lognormal", "constant"] = "lognormal"
    #: with a lognormal speed, each point is simulated this many times (server.speed.stream 0..N-1, same
    #: arrivals and samples) and the runs pooled: a drift slower than a point makes one run one draw
    speed_replications: PositiveInt = 10


class Testbed(Strict):
    name: str = Field("testbed", pattern=r"^[A-Za-z0-9_.\-]+$")
    model: Optional[str] = None
    manifest: str
    trace: Optional[str] = None
    clients: PositiveInt = 2
    requests: PositiveInt = 30
    #: each point gets at least this many seconds of arrivals (more requests at higher loads): the host's
    #: speed has slow spells of a few seconds (testbed/README.md), which a 4-s point can sit inside
    min_point_s: float = Field(0.0, ge=0)
    #: each point is run this many times, the points interleaved round by round, each round after a
    #: fresh calibration; the comparison pools the rounds (see testbed/README.md)
    rounds: PositiveInt = 1
    #: each point's arrivals run this many times on the testbed (the first is compared with the simulator;
    #: the others against the first: the testbed's own repeatability, the floor of any error)
    replays: PositiveInt = 1
    loads: list[float] = Field([0.5], min_length=1)
    policies: list[dict[str, Any]] = Field([{"kind": "global_only", "jpeg_quality": 75}], min_length=1)
    network: Network = Network()
    server: ServerBlock = ServerBlock()
    calibration: Calibration = Calibration()
    time_limit_s: PositiveFloat = 120.0
    warmup_requests: int = Field(0, ge=0, description="first requests left out of the comparison")
    seed: int = Field(0, ge=0)
    deadline_s: PositiveFloat = 2.0


def load_testbed(path: str | Path) -> tuple[Testbed, Path]:
    """Parse TESTBED.yaml; paths in it are made absolute against its folder."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("", f"testbed file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError("", f"{path}: must be a YAML mapping")
    try:
        tb = Testbed.model_validate(data)
    except ValidationError as exc:
        e = exc.errors()[0]
        raise ConfigError(".".join(str(p) for p in e["loc"]), e["msg"]) from None
    for k, rho in enumerate(tb.loads):
        if not 0 < rho < 1:
            raise ConfigError(f"loads.{k}", f"offered load must lie in (0, 1), got {rho}")
    if tb.server.model_cpus is not None:
        if problem := cpus_problem(tb.server.model_cpus):
            raise ConfigError("server.model_cpus", f"{problem} (or null: the last one)")
        if not tb.server.model_process:
            raise ConfigError("server.model_cpus", "needs server.model_process: true")
    base = path.parent.resolve()

    def absolute(p: str | None) -> str | None:
        return None if p is None else str(p if Path(p).is_absolute() else base / p)

    model = absolute(tb.model)
    if model is None:
        if not DEFAULT_MODEL.is_dir():
            raise ConfigError("model", f"no model given and the default {DEFAULT_MODEL} does not exist; "
                                       "set model: to a checkpoint directory")
        model = str(DEFAULT_MODEL.resolve())
    net = tb.network.model_copy(update={
        d: getattr(tb.network, d).model_copy(update={"bandwidth_trace": absolute(getattr(tb.network, d).bandwidth_trace)})
        for d in ("uplink", "downlink")})
    for d in ("uplink", "downlink"):
        trace = getattr(net, d).bandwidth_trace
        if trace is not None and not Path(trace).is_file():
            raise ConfigError(f"network.{d}.bandwidth_trace", f"trace file not found: {trace}")
    tb = tb.model_copy(update={"model": model, "manifest": absolute(tb.manifest), "trace": absolute(tb.trace),
                               "network": net})
    return tb, base
