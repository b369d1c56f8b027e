"""The network as a scenario user meets it: trace fields in YAML, per-client offsets, link metrics
in summary.json, one-line errors naming the field, file and line."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from edgevlm.sim import run
from edgevlm.sim.bandwidth import ShiftedProfile, mahimahi_lines, write_mahimahi
from edgevlm.sim.engine import Simulation
from edgevlm.sim.errors import ConfigError
from edgevlm.sim.network import DEFAULT_OVERHEAD_BYTES, FifoLink, PsLink
from edgevlm.sim.scenario import parse_scenario
from edgevlm.sim.workload import Workload


@pytest.fixture
def lte_like(tmp_path):
    """A generated (not real) Mahimahi trace: 30 s of rates between 0.5 and 8 Mbit/s."""
    rng = np.random.default_rng(2)
    return write_mahimahi(tmp_path / "lte-like.up", mahimahi_lines(rng.uniform(0.5, 8, 30).tolist()))


def test_defaults_are_ps_with_http_overhead(scenario_dict, synthetic_trace):
    sc = parse_scenario(scenario_dict(network={"uplink": {"capacity_mbps": 20}, "downlink": {"capacity_mbps": 50}}))
    assert sc.network.uplink.discipline == "ps" and sc.network.downlink.discipline == "ps"
    assert sc.network.uplink.overhead_bytes == DEFAULT_OVERHEAD_BYTES
    sim = Simulation(sc, Workload.load(synthetic_trace), lambda r: None)
    assert isinstance(sim.uplink, PsLink)


def test_link_metrics_land_in_the_summary(scenario_dict):
    s = run(scenario_dict(stop={"requests": 1500})).summary
    for name in ("uplink", "downlink"):
        link = s[name]
        for key in ("utilisation", "busy_fraction", "mean_active_transfers", "bytes_carried", "transfers"):
            assert key in link
        assert set(link["slowdown"]) >= {"mean", "p50", "p95", "p99"}
        assert link["slowdown"]["p50"] >= 1 - 1e-9  # nothing beats the bare capacity
        assert 0 < link["utilisation"] <= 1
        assert s["utilisation"][name] == link["utilisation"]
    # 20 Mbit/s shared by clients capped at 10 or 2: slowdowns of 2 and 10 appear.
    assert s["uplink"]["slowdown"]["p95"] >= 2


def test_access_traces_give_each_client_its_own_offset(scenario_dict, synthetic_trace, lte_like):
    d = scenario_dict(clients={"count": 40, "arrival": {"kind": "poisson", "rate_per_s": 0.02},
                               "link_classes": [{"share": 0.5, "uplink_mbps": 10},
                                                {"share": 0.5, "bandwidth_trace": {"kind": "mahimahi",
                                                                                   "path": str(lte_like)}}]})
    w = Workload.load(synthetic_trace)
    sim = Simulation(parse_scenario(d), w, lambda r: None)
    traced = [a for a in sim.access_bps if isinstance(a, ShiftedProfile)]
    assert len(traced) == 20 and sum(isinstance(a, float) for a in sim.access_bps) == 20 and len(sim.access_bps) == 40
    offsets = [a.offset_s for a in traced]
    assert len(set(offsets)) == 20 and all(0 <= o < 30 for o in offsets)
    assert len({id(a.base) for a in traced}) == 1  # the file is parsed once
    again = Simulation(parse_scenario(d), w, lambda r: None)
    assert [a.offset_s for a in again.access_bps if isinstance(a, ShiftedProfile)] == offsets
    a = run(d).summary
    assert a["counts"]["ok"] == 2000
    assert a == {**run(d).summary, "environment": a["environment"]}


def test_shared_uplink_trace_runs_and_is_deterministic(scenario_dict, lte_like, tmp_path):
    fifo = scenario_dict(network={"uplink": {"discipline": "fifo", "bandwidth_trace": {"kind": "mahimahi",
                                                                                    "path": str(lte_like)}},
                                  "downlink": {"capacity_mbps": 100}})
    parse_scenario(fifo)  # the caps are checked against the trace's peak rate once the engine has read it
    with pytest.raises(ConfigError, match="use `network.uplink.discipline: ps`") as err:
        run(fifo, tmp_path / "fifo")  # capped clients on a FIFO trace link: the one-capped-transfer-at-a-time trap
    assert err.value.path == "network.uplink.discipline" and "peak rate" in str(err.value)
    assert not (tmp_path / "fifo").exists() or not any((tmp_path / "fifo").iterdir())
    for discipline in ("ps",):
        d = scenario_dict(network={
            "uplink": {"discipline": discipline, "propagation_ms": 20,
                       "bandwidth_trace": {"kind": "mahimahi", "path": str(lte_like)}},
            "downlink": {"capacity_mbps": 100}})
        r1, r2 = run(d, tmp_path / f"{discipline}1"), run(d, tmp_path / f"{discipline}2")
        assert (tmp_path / f"{discipline}1" / "events.parquet").read_bytes() == \
            (tmp_path / f"{discipline}2" / "events.parquet").read_bytes()
        up = r1.summary["uplink"]
        assert up["discipline"] == discipline
        assert up["capacity_mbps"] == pytest.approx(np.mean(np.random.default_rng(2).uniform(0.5, 8, 30)), rel=0.01)
        assert up["bytes_carried"] == r1.events["uplink_bytes"].sum()


def test_relative_trace_path_is_found_beside_the_scenario(scenario_dict, tmp_path, lte_like):
    d = scenario_dict(network={"uplink": {"bandwidth_trace": {"kind": "mahimahi", "path": lte_like.name}},
                               "downlink": {"capacity_mbps": 100}}, stop={"requests": 300})
    path = tmp_path / "sc.yaml"
    path.write_text(yaml.safe_dump(d))
    assert run(path).summary["counts"]["ok"] == 300


def test_bad_trace_in_a_scenario_names_field_file_and_line(scenario_dict, tmp_path):
    bad = tmp_path / "bad.up"
    bad.write_text("1\n2\n3\nx7\n")
    d = scenario_dict(network={"uplink": {"bandwidth_trace": {"kind": "mahimahi", "path": str(bad)}},
                               "downlink": {"capacity_mbps": 100}})
    with pytest.raises(ConfigError) as err:
        run(d)
    msg = str(err.value)
    assert msg.startswith("network.uplink.bandwidth_trace:") and f"{bad}:4:" in msg
    d = scenario_dict(clients={"count": 4, "arrival": {"kind": "poisson", "rate_per_s": 0.1},
                               "link_classes": [{"share": 1, "bandwidth_trace": {"kind": "csv", "path": str(bad)}}]})
    with pytest.raises(ConfigError, match=r"clients.link_classes\[0\].bandwidth_trace: .*bad.up:1:"):
        run(d)


@pytest.mark.parametrize("block,needle", [
    ({"clients": {"count": 4, "arrival": {"kind": "poisson", "rate_per_s": 1}, "link_classes": [{"share": 1}]}},
     "clients.link_classes[0]"),
    ({"network": {"uplink": {"capacity_mbps": 5, "bandwidth_trace": {"kind": "constant", "mbps": 5}}}},
     "network.uplink"),
    ({"network": {"uplink": {"capacity_mbps": 5, "discipline": "wfq"}}}, "network.uplink.discipline"),
    ({"network": {"uplink": {"bandwidth_trace": {"kind": "pcap", "path": "x"}}}}, "network.uplink.bandwidth_trace"),
])
def test_bad_network_fields_name_their_path(scenario_dict, block, needle):
    with pytest.raises(ConfigError) as err:
        parse_scenario(scenario_dict(**block))
    assert str(err.value).startswith(needle), str(err.value)


def test_constant_trace_class_is_a_plain_rate(scenario_dict, synthetic_trace):
    d = scenario_dict(clients={"count": 6, "arrival": {"kind": "poisson", "rate_per_s": 0.1},
                               "link_classes": [{"share": 1, "bandwidth_trace": {"kind": "constant", "mbps": 3}}]},
                      network={"uplink": {"capacity_mbps": 20, "discipline": "ps"}, "downlink": {"capacity_mbps": 9}})
    sim = Simulation(parse_scenario(d), Workload.load(synthetic_trace), lambda r: None)
    assert list(sim.access_bps) == [3e6] * 6 and isinstance(sim.uplink, PsLink)
    assert math.isclose(sim.downlink.capacity_bps, 9e6)


def test_shipped_cell_scenario_runs_on_its_generated_trace(synthetic_trace):
    from pathlib import Path

    scenarios = Path(__file__).resolve().parent.parent / "scenarios"
    d = yaml.safe_load((scenarios / "cell-traces.yaml").read_text())
    d["trace"], d["stop"] = str(synthetic_trace), {"requests": 500}
    s = run(d, base_dir=scenarios).summary
    assert s["counts"]["ok"] == 500 and s["uplink"]["discipline"] == "ps"
    head = (scenarios / "cell-uplink-synthetic.csv").read_text().splitlines()[0]
    assert "SYNTHETIC" in head  # shipped traces say what they are
