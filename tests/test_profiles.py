"""Profiles: named and inline models/hardware in the scenario, and the paper's FLOPs accounting (eq. 17-20)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from edgevlm.sim import run
from edgevlm.sim.errors import ConfigError
from edgevlm.sim.scenario import parse_scenario

CUSTOM = {"name": "tiny-vlm", "d_model": 1024, "n_layers": 8, "params_b": 0.3, "visual_tokens": 64,
          "vision_px": 224, "vision_tflops": 0.01}


def eq17(n: int, d: int, L: int) -> float:
    """FLOPs(n) = (24·n·d² + 4·n²·d)·L, written out again here, independently of sim/."""
    return (24 * n * d * d + 4 * n * n * d) * L


@pytest.mark.parametrize("model,d,L,n_v", [("llava-1.5-7b", 4096, 32, 576), ("llava-1.5-13b", 5120, 40, 576),
                                           ("qwen2.5-vl-7b", 3584, 28, 256), (CUSTOM, 1024, 8, 64)])
@pytest.mark.parametrize("policy", [{"kind": "global_only"}, {"kind": "always_crop"},
                                    {"kind": "entropy_threshold", "threshold": 0.5}])
def test_event_log_flops_follow_eq_17_to_20(scenario_dict, model, d, L, n_v, policy):
    """Stage 1 = FLOPs(n_v) (eq. 18); a crop adds the attention pass FLOPs(n_v) and stage 2 FLOPs(2·n_v)
    (eq. 19); relative computation = 1 + r·(FLOPs(n_v) + FLOPs(2·n_v))/FLOPs(n_v) (eq. 20)."""
    res = run(scenario_dict(server={"model": model}, policy=policy, stop={"requests": 400}))
    ev = res.events
    crop = ev["stages"].to_numpy() == 2
    if policy["kind"] == "global_only":
        assert not crop.any()
    if policy["kind"] == "always_crop":
        assert crop.all()
    stage1, extra = eq17(n_v, d, L), eq17(n_v, d, L) + eq17(2 * n_v, d, L)
    np.testing.assert_allclose(ev["flops"], stage1 + np.where(crop, extra, 0.0), rtol=1e-12)
    r = res.summary["retransmission_rate"]
    assert res.summary["flops_per_request"] / stage1 == pytest.approx(1 + r * extra / stage1, rel=1e-9)


def test_inline_custom_model_and_hardware_round_trip(scenario_dict):
    hw = {"name": "my-gpu", "peak_tflops": 100, "mem_bw_gbps": 1000, "memory_gb": 40}
    sc = parse_scenario(scenario_dict(server={"model": CUSTOM, "hardware": hw}))
    assert sc.server.model.d_model == 1024 and sc.server.hardware.mfu == 0.4  # defaults filled in
    again = parse_scenario(yaml.safe_load(sc.to_yaml()))
    assert again.hash() == sc.hash()
    assert yaml.safe_load(sc.to_yaml())["server"]["model"]["d_model"] == 1024


def test_named_profiles_dump_as_their_names(scenario_dict):
    sc = parse_scenario(scenario_dict(server={"model": "qwen2.5-vl-7b", "hardware": "h100-sxm"}))
    dumped = yaml.safe_load(sc.to_yaml())
    assert dumped["server"]["model"] == "qwen2.5-vl-7b" and dumped["server"]["hardware"] == "h100-sxm"
    assert dumped["clients"]["edge"]["device"] == "imx95"
    assert sc.server.model.visual_tokens == 256


def test_custom_hardware_changes_the_service_time(scenario_dict):
    slow = {"name": "slow", "peak_tflops": 31.2, "mem_bw_gbps": 203.9, "memory_gb": 80}
    fast = run(scenario_dict(policy={"kind": "global_only"}, stop={"requests": 200})).events
    ten_x = run(scenario_dict(server={"hardware": slow}, policy={"kind": "global_only"}, stop={"requests": 200})).events
    ratio = ((ten_x["s1_end_s"] - ten_x["s1_start_s"]) / (fast["s1_end_s"] - fast["s1_start_s"])).to_numpy()
    np.testing.assert_allclose(ratio, 10.0, rtol=1e-9)  # every roofline term scales with 1/peak or 1/bandwidth


@pytest.mark.parametrize("server,needle", [
    ({"model": "llava-9b"}, r"^server\.model: unknown model 'llava-9b'; allowed: llava-1\.5-7b, llava-1\.5-13b, "
                            r"qwen2\.5-vl-7b"),
    ({"hardware": "tpu"}, r"^server\.hardware: unknown hardware 'tpu'; allowed: a100-80gb, h100-sxm, l4"),
    ({"model": {**CUSTOM, "d_modle": 5}}, r"^server\.model\.d_modle: unknown key \(did you mean 'd_model'\?\)"),
    ({"model": {"name": "x", "d_model": 8}}, r"^server\.model\.n_layers: required field is missing"),
    ({"hardware": {"name": "x", "peak_tflops": 1, "mem_bw_gbps": 1, "memory_gb": 1, "mfu": 2}},
     r"^server\.hardware\.mfu: Input should be less than or equal to 1"),
    ({"routing": "random"}, r"^server\.routing: Input should be 'least_loaded' or 'round_robin'"),
    ({"scheduler": {"kind": "continuous", "max_bach": 4}}, r"^server\.scheduler\.max_bach: unknown key \(did you mean "
                                                          r"'max_batch'\?\)"),
])
def test_bad_server_fields_name_the_yaml_path(scenario_dict, server, needle):
    with pytest.raises(ConfigError) as exc:
        parse_scenario(scenario_dict(server=server))
    assert __import__("re").search(needle, str(exc.value)), str(exc.value)


def test_unknown_edge_device_names_the_field(scenario_dict):
    d = scenario_dict()
    d["clients"]["edge"] = {"device": "jetson"}
    with pytest.raises(ConfigError, match=r"^clients\.edge\.device: unknown edge device 'jetson'; allowed: imx95"):
        parse_scenario(d)
