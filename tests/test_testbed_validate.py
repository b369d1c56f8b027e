"""testbed/validate.py's stages without a model: scenarios through the user's parser, and the context
managers that always tear down the namespaces, stop the server and close its log."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgevlm.sim.errors import ConfigError, UserError
from edgevlm.sim.scenario import Scenario
from edgevlm.testbed import validate
from edgevlm.testbed.config import Testbed as TbConfig
from edgevlm.testbed.netns import NetnsUnavailable, unavailable_reason

NET = {"edge_prep_s": 0.01, "edge_crop_s": 0.005, "uplink_fixed_s": 0.002, "downlink_fixed_s": 0.001,
       "uplink_overhead_bytes": 170, "downlink_overhead_bytes": 240}


def _scenario(synthetic_trace, tmp_path, **kw) -> Scenario:
    profile = tmp_path / "profile.csv"
    profile.write_text("phase,batch,tokens,seconds\nprefill,1,64,0.05\ndecode,1,1,0.01\n")
    args = dict(name="global_only-rho0.5", seed=3, policy={"kind": "global_only", "jpeg_quality": 75},
                trace=synthetic_trace, profile=profile, rate_per_client_s=0.7, visual_tokens=64, vision_px=64,
                net=NET, speed={"jitter_sigma": 0.1, "drift_sigma": 0.05, "drift_tau_s": 20.0, "mean_ratio": 1.0})
    args.update(kw)
    return validate.build_scenario(TbConfig(manifest="m.jsonl", clients=2, requests=40), **args)


def test_points_are_parsed_scenarios(synthetic_trace, tmp_path):
    sc = _scenario(synthetic_trace, tmp_path)
    assert isinstance(sc, Scenario) and sc.seed == 3 and sc.clients.count == 2
    assert sc.clients.arrival.rate_per_s == 0.7 and sc.stop.requests == 40
    assert sc.network.uplink.overhead_bytes == 170 and sc.network.uplink.propagation_ms == pytest.approx(
        TbConfig(manifest="m").network.uplink.propagation_ms + 2.0)
    assert sc.server.speed.kind == "lognormal" and sc.server.speed.stream == 0
    assert sc.policy.gate == "edge"
    # A variant is parsed again: the change lands, everything else (and so the arrivals) stays.
    v = validate.with_changes(sc, {"server": {"speed": {"stream": 4}}})
    assert v.server.speed.stream == 4 and v.server.speed.jitter_sigma == sc.server.speed.jitter_sigma
    assert v.model_copy(update={"server": sc.server}).hash() == sc.hash() != v.hash()
    # ... and a bad value is the parser's one-line error naming the field, as for a user's YAML
    with pytest.raises(ConfigError, match="server.speed.stream"):
        validate.with_changes(sc, {"server": {"speed": {"stream": -1}}})
    with pytest.raises(ConfigError, match="clients.arrival.rate_per_s"):
        _scenario(synthetic_trace, tmp_path, rate_per_client_s=-1.0)


class _FakeNs:
    """A 'namespace' whose exec prefix runs a stand-in server: prints, then sleeps until stopped."""

    server = client = "none"
    server_ip = "127.0.0.1"

    def exec_prefix(self, ns):
        return [sys.executable, "-c", "import sys, time; print('serving', flush=True); time.sleep(120)"]


def test_inference_server_stops_the_server_and_closes_its_log(tmp_path, monkeypatch):
    opened = []

    def tracking_open(*a, **kw):
        f = open(*a, **kw)
        opened.append(f)
        return f

    monkeypatch.setattr(validate, "open", tracking_open, raising=False)
    procs = []

    def ready(url, prefix, timeout_s, proc):  # "healthy" once the stand-in has written to its log
        procs.append(proc)
        for _ in range(600):
            if (tmp_path / "server.log").read_text():
                return
            time.sleep(0.05)
        raise AssertionError("stand-in server never started")

    monkeypatch.setattr(validate, "_wait_health", ready)
    tb = TbConfig(manifest="m.jsonl", model="ckpt", server={"model_process": False})
    with pytest.raises(RuntimeError, match="boom"):
        with validate.inference_server(_FakeNs(), tb, {}, tmp_path / "server.log", lambda m: None) as url:
            assert url == f"http://127.0.0.1:{tb.server.port}" and procs[0].poll() is None
            raise RuntimeError("boom")
    (proc,) = procs
    assert proc.poll() is not None  # stopped
    (log,) = opened
    assert log.closed and (tmp_path / "server.log").read_text() == "serving\n"


def test_network_namespaces_unavailable_is_a_user_error(monkeypatch):
    class NoNetns:
        def __init__(self, *a):
            pass

        def __enter__(self):
            raise NetnsUnavailable("needs root")

        def __exit__(self, *exc):
            raise AssertionError("never entered")

    monkeypatch.setattr(validate, "Netns", NoNetns)
    with pytest.raises(UserError, match="testbed: needs root"):
        with validate.network_namespaces(TbConfig(manifest="m")):
            pass


def test_network_namespaces_are_torn_down_on_error():
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    with pytest.raises(RuntimeError, match="boom"):
        with validate.network_namespaces(TbConfig(manifest="m")) as ns:
            names = (ns.server, ns.client)
            listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
            assert all(n in listed for n in names)
            raise RuntimeError("boom")
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listed for n in names)
