"""Scenario YAML v1 (DESIGN.md §3) as strict pydantic models, and a loader with one-line errors.

Unknown keys are errors, and every error names its YAML path (`policy.threshold`) and the allowed
values. YAML is read with safe_load only. Blocks with variants are `kind`-tagged unions built from
the registries, so a new policy, arrival process, latency model or scheduler needs no change here.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Optional, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, PositiveFloat, PositiveInt, ValidationError, model_serializer, model_validator

from edgevlm.sim import yamlsafe
from edgevlm.sim.arrivals import arrival_processes
from edgevlm.sim.errors import ConfigError
from edgevlm.sim.bandwidth import BandwidthTraceConfig
from edgevlm.sim.edge import EdgeConfig
from edgevlm.sim.hardening import check_values
from edgevlm.sim.latency import RooflineLatency, latency_models
from edgevlm.sim.network import LinkConfig
from edgevlm.sim.policies import policies
from edgevlm.sim.registry import Strict
from edgevlm.sim.server import FifoScheduler, PrefixCacheConfig, ServerBase, schedulers
from edgevlm.sim.server.encoder import EncoderPoolConfig
from edgevlm.sim.speed import ConstantSpeed, speed_models

SCENARIO_VERSION = 1
#: The trace a scenario without `trace:` runs on: the shipped tiny-local trace (found by runner.resolve_trace).
DEFAULT_TRACE = "traces/tiny-scenetext-v2.parquet"
#: Per-client state is O(count) up front; beyond this a typo (an extra 0s) exhausts memory.
MAX_CLIENTS = 1_000_000


class StopConfig(Strict):
    """Run until this many requests have arrived, or until time_s; in-flight requests then drain."""

    requests: Optional[PositiveInt] = None
    time_s: Optional[PositiveFloat] = None
    warmup_s: float = Field(0.0, ge=0, description="arrivals before this are excluded from steady-state stats")

    @model_validator(mode="after")
    def _one_limit(self):
        if (self.requests is None) == (self.time_s is None):
            raise ValueError("give exactly one of 'requests' or 'time_s'")
        if self.time_s is not None and self.warmup_s >= self.time_s:
            raise ValueError("warmup_s must be shorter than time_s")
        return self


class LinkClass(Strict):
    """A share of the clients with one access link: a constant `uplink_mbps` or a bandwidth trace
    (each client then starts at its own seeded random offset in the trace)."""

    share: float = Field(gt=0, le=1)
    uplink_mbps: Optional[PositiveFloat] = None
    bandwidth_trace: Optional[BandwidthTraceConfig] = None

    @model_validator(mode="after")
    def _one_rate(self):
        if (self.uplink_mbps is None) == (self.bandwidth_trace is None):
            raise ValueError("give exactly one of 'uplink_mbps' or 'bandwidth_trace'")
        return self


class ClientsConfig(Strict):
    count: PositiveInt = Field(100, le=MAX_CLIENTS)
    arrival: arrival_processes.config_union()  # type: ignore[valid-type]
    edge: EdgeConfig = EdgeConfig()
    link_classes: list[LinkClass] = Field(default_factory=lambda: [LinkClass(share=1.0, uplink_mbps=10.0)],
                                          min_length=1)

    @model_validator(mode="after")
    def _shares(self):
        total = sum(c.share for c in self.link_classes)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ValueError(f"link_classes shares must sum to 1, got {total:g}")
        return self


class NetworkConfig(Strict):
    uplink: LinkConfig = LinkConfig(capacity_mbps=20.0, propagation_ms=20.0)
    downlink: LinkConfig = LinkConfig(capacity_mbps=100.0, propagation_ms=20.0)


class ServerConfig(ServerBase):
    scheduler: schedulers.config_union() = FifoScheduler()  # type: ignore[valid-type]
    latency: latency_models.config_union() = RooflineLatency()  # type: ignore[valid-type]
    speed: speed_models.config_union() = ConstantSpeed()  # type: ignore[valid-type]
    prefix_cache: PrefixCacheConfig = Field(PrefixCacheConfig(), description="reuse stage 1's KV in stage 2 "
                                            "(sim/server/prefix.py)")

    encoder: EncoderPoolConfig | None = Field(None, description="a separate vision-encoder pool "
                                              "(sim/server/encoder.py); None: the LLM workers encode")

    @model_serializer(mode="wrap")
    def _omit_new_defaults(self, handler):
        """A scenario without prefix reuse or an encoder pool dumps as before they existed (run
        directories keep their bytes)."""
        data = handler(self)
        if self.prefix_cache == PrefixCacheConfig():
            data.pop("prefix_cache", None)
        if self.encoder is None:
            data.pop("encoder", None)
        return data


class SloConfig(Strict):
    deadline_s: PositiveFloat = 2.0


class Scenario(Strict):
    """One simulation: workload, network, server, policy and stopping rule."""

    name: str = Field("scenario", min_length=1, pattern=r"^[A-Za-z0-9_.\-]+$")
    seed: int = Field(0, ge=0)
    trace: str = Field(DEFAULT_TRACE, min_length=1, description="trace file; default: the shipped tiny-local trace")
    stop: StopConfig
    clients: ClientsConfig
    network: NetworkConfig = NetworkConfig()
    server: ServerConfig = ServerConfig()
    policy: policies.config_union()  # type: ignore[valid-type]
    slo: SloConfig = SloConfig()

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        """SHA-256 of the scenario with defaults filled in: equal hashes mean equal runs."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


def parse_scenario(data: Any, *, source: str = "scenario") -> Scenario:
    """Validate a scenario dict; raise ConfigError naming the first bad field."""
    if not isinstance(data, dict):
        raise ConfigError("", f"{source}: a scenario must be a YAML mapping, got {type(data).__name__}")
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, data) from None
    check_values(data, sc)
    check_fifo_access_caps(sc)
    return sc


def check_fifo_access_caps(sc: Scenario, trace_peak_bps: float | None = None) -> None:
    """Reject a `fifo` uplink that some client's access rate can cap below the link's capacity.

    A FIFO link serves one transfer at a time at min(capacity, access rate), so a wide shared link
    fed by slow access links would carry one capped transfer at a time (a 100 Mbit/s link busy for a
    whole 1 Mbit/s upload) and queue everyone else behind it: a trap, not a model of a cell. `ps`
    serves capped transfers side by side (max-min fair), which is the access-hop-plus-shared-link
    behaviour (issue 20). Caps at or above a constant capacity never bind and are allowed. On a
    trace-driven uplink the capacity is the trace's peak rate (its busiest millisecond), known once the
    engine has read the trace: it calls this again with `trace_peak_bps`.
    """
    up = sc.network.uplink
    if up.discipline != "fifo":
        return
    for k, c in enumerate(sc.clients.link_classes):
        if c.bandwidth_trace is not None:
            binds = f"clients.link_classes[{k}] follows a bandwidth trace"
        elif up.capacity_mbps is not None:
            if c.uplink_mbps >= up.capacity_mbps:
                continue
            binds = (f"clients.link_classes[{k}].uplink_mbps {c.uplink_mbps:g} is below network.uplink."
                     f"capacity_mbps {up.capacity_mbps:g}")
        elif trace_peak_bps is None or c.uplink_mbps * 1e6 >= trace_peak_bps:
            continue  # not known yet (parsing), or the cap never binds
        else:
            binds = (f"clients.link_classes[{k}].uplink_mbps {c.uplink_mbps:g} is below the uplink trace's peak "
                     f"rate {trace_peak_bps / 1e6:g} Mbit/s")
        raise ConfigError("network.uplink.discipline",
                          f"'fifo' with access links that cap transfers below the shared capacity would serve "
                          f"one capped transfer at a time and leave the link idle ({binds}); use "
                          f"`network.uplink.discipline: ps` (each access link runs at its own rate, the "
                          f"shared link is split max-min fair), or give every link class an uplink_mbps at "
                          f"or above the capacity")


def load_scenario(path: str | Path) -> tuple[Scenario, Path]:
    """Read and validate a scenario YAML file; returns (scenario, the file's directory)."""
    path = Path(path)
    data = yamlsafe.read_file(path, "scenario")  # safe_load, bounded against alias bombs and deep nesting
    return parse_scenario(data, source=str(path)), path.resolve().parent


# ---------------------------------------------------------------- error messages


def config_error(exc: ValidationError, data: dict, root: type[BaseModel] | None = None) -> ConfigError:
    """One ConfigError listing every validation error, one `path: message` line each.

    A typo shows as an unknown key plus a missing one; the missing key the did-you-mean names is
    the same mistake, so it is not listed twice. `root` is the model validated (default: Scenario).
    """
    root = root or Scenario
    lines: list[tuple[str, str]] = []
    suggested: set[tuple] = set()
    errors = exc.errors(include_url=False)
    for err in sorted(errors, key=lambda e: e["type"] != "extra_forbidden"):
        loc = tuple(err["loc"])
        path, model_loc = _yaml_path(loc, data)
        kind = err["type"]
        if kind == "missing" and model_loc in suggested:
            continue
        if kind == "extra_forbidden":
            allowed = _allowed_keys(model_loc, data, root)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            if close:
                suggested.add(model_loc[:-1] + (close[0],))
            msg = "unknown key" + (f" (did you mean '{close[0]}'?)" if close else "")
            msg += f"; allowed keys: {', '.join(allowed)}" if allowed else ""
        elif kind == "missing":
            msg = "required field is missing"
        elif kind == "union_tag_invalid":
            ctx = err.get("ctx", {})
            allowed = [t.strip() for t in str(ctx.get("expected_tags", "")).replace(chr(39), "").split(",")]
            close = difflib.get_close_matches(str(ctx.get("tag")), allowed, n=1)
            msg = (f"unknown kind {ctx.get('tag')!r}" + (f" (did you mean '{close[0]}'?)" if close else "")
                   + f"; allowed: {', '.join(allowed)}")
        elif kind == "union_tag_not_found":
            msg = f"needs a 'kind'; allowed: {', '.join(_union_kinds(model_loc, root))}"
        else:
            msg = err["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            if "input" in err and kind not in ("model_type", "dict_type") and not isinstance(err["input"], dict):
                msg += f" (got {_short(err['input'])})"
        lines.append((path, msg))
    return ConfigError.many(_merge_alternatives(lines))


def _merge_alternatives(lines: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One line per field: a value failing every member of a union (`int | 'all'`) is one mistake."""
    merged: dict[str, list[str]] = {}
    for path, msg in lines:
        merged.setdefault(path, [])
        if msg not in merged[path]:
            merged[path].append(msg)
    return [(path, "; or ".join(msgs)) for path, msgs in merged.items()]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _yaml_path(loc: tuple, data: Any) -> tuple[str, tuple]:
    """Drop union-tag components pydantic inserts into `loc`, keeping only keys the YAML has."""
    parts, model_loc, cur = [], [], data
    for item in loc:
        if isinstance(cur, dict) and item in cur:
            parts.append(str(item))
            model_loc.append(item)
            cur = cur[item]
        elif isinstance(cur, list) and isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
            model_loc.append(item)
            cur = cur[item] if item < len(cur) else _ABSENT
        elif isinstance(cur, dict) and isinstance(item, str) and "kind" in cur and item == cur.get("kind"):
            continue  # the union tag
        elif parts and cur is not _ABSENT and not isinstance(cur, (dict, list)):
            continue  # past a YAML scalar: the rest names union members (`tokens.int`), not keys
        else:
            parts.append(str(item))
            model_loc.append(item)
            cur = _ABSENT
    return ".".join(parts), tuple(model_loc)


_ABSENT = object()  # a key the YAML does not have


def _model_at(model_loc: tuple, root: type[BaseModel] | None = None) -> type[BaseModel] | None:
    """The pydantic model class whose fields the YAML mapping at model_loc (a tuple of keys) holds."""
    cls: Any = root or Scenario
    for key in model_loc:
        cls = _unwrap(cls)
        if isinstance(key, int):
            cls = get_args(cls)[0] if get_args(cls) else None
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or key not in cls.model_fields:
            return None
        cls = cls.model_fields[key].annotation
    return cls


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is not None and "Annotated" in str(get_origin(tp)):
        tp = get_args(tp)[0]
    if get_origin(tp) is Union:
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return tp


def _union_members(tp: Any) -> list[type[BaseModel]]:
    tp = _unwrap(tp)
    if get_origin(tp) is Union:
        return [_unwrap(a) for a in get_args(tp) if a is not type(None)]
    return [tp] if isinstance(tp, type) else []


def _union_kinds(model_loc: tuple, root: type[BaseModel] | None = None) -> list[str]:
    kinds = []
    for m in _union_members(_model_at(model_loc, root)):
        f = getattr(m, "model_fields", {}).get("kind")
        if f is not None:
            kinds.extend(a for a in get_args(f.annotation) if isinstance(a, str))
    return kinds


def _allowed_keys(model_loc: tuple, data: Any, root: type[BaseModel] | None = None) -> list[str]:
    """Field names allowed beside an unknown key (the key is model_loc[-1])."""
    members = [m for m in _union_members(_model_at(model_loc[:-1], root))
               if isinstance(m, type) and issubclass(m, BaseModel)]
    mapping = data
    for key in model_loc[:-1]:
        mapping = mapping[key] if isinstance(mapping, (dict, list)) else None
    if len(members) > 1 and isinstance(mapping, dict):  # a kind-tagged union: the member the YAML names
        named = [m for m in members if mapping.get("kind") in get_args(m.model_fields["kind"].annotation)]
        members = named or members
    return sorted({k for m in members for k in m.model_fields}) if len(members) > 1 else (
        list(members[0].model_fields) if members else [])

