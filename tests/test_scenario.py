"""Scenario validation: one clear error naming the YAML path and the allowed values."""

from __future__ import annotations

import pytest

from edgevlm.sim.errors import ConfigError
from edgevlm.sim.scenario import load_scenario, parse_scenario


def error_of(data) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_scenario(data)
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_valid_scenario_round_trips_and_hashes_stably(scenario_dict):
    a, b = parse_scenario(scenario_dict()), parse_scenario(scenario_dict())
    assert a.hash() == b.hash()
    assert parse_scenario(scenario_dict(seed=4)).hash() != a.hash()
    import yaml

    assert parse_scenario(yaml.safe_load(a.to_yaml())).hash() == a.hash()


def test_unknown_top_level_key(scenario_dict):
    d = scenario_dict()
    d["polcy"] = {}
    assert error_of(d).startswith("polcy: unknown key (did you mean 'policy'?); allowed keys: name, seed, trace")


def test_unknown_key_inside_a_kind_lists_that_kinds_fields(scenario_dict):
    msg = error_of(scenario_dict(policy={"kind": "entropy_threshold", "threshhold": 0.5}))
    assert msg.startswith("policy.threshhold: unknown key (did you mean 'threshold'?); allowed keys:")
    assert "threshold" in msg and "metric" in msg and "tokens" in msg


def test_unknown_kind_lists_allowed_kinds(scenario_dict):
    msg = error_of(scenario_dict(policy={"kind": "magic"}))
    assert msg.startswith("policy: unknown kind 'magic'; allowed:")
    assert "global_only" in msg and "entropy_threshold" in msg


def test_missing_kind(scenario_dict):
    msg = error_of(scenario_dict(policy={"threshold": 0.5}))
    assert msg.startswith("policy: needs a 'kind'; allowed:") and "always_crop" in msg


@pytest.mark.parametrize("rate", [-1.0, 0.0, float("nan")])
def test_bad_rates(scenario_dict, rate):
    msg = error_of(scenario_dict(clients={"count": 3, "arrival": {"kind": "poisson", "rate_per_s": rate}}))
    assert msg.startswith("clients.arrival.rate_per_s:")


def test_bad_metric_lists_the_allowed_metrics(scenario_dict):
    msg = error_of(scenario_dict(policy={"kind": "entropy_threshold", "metric": "entropy", "threshold": 1}))
    assert msg.startswith("policy.metric:") and "'min_entropy', 'shannon' or 'margin'" in msg


def test_shares_must_sum_to_one(scenario_dict):
    msg = error_of(scenario_dict(clients={"count": 3, "arrival": {"kind": "poisson", "rate_per_s": 1},
                                          "link_classes": [{"share": 0.5, "uplink_mbps": 1}]}))
    assert msg.startswith("clients:") and "sum to 1" in msg


def test_list_index_in_path(scenario_dict):
    msg = error_of(scenario_dict(clients={"count": 3, "arrival": {"kind": "poisson", "rate_per_s": 1},
                                          "link_classes": [{"share": 1, "uplink_mbps": -3}]}))
    assert msg.startswith("clients.link_classes[0].uplink_mbps:")


def test_stop_needs_exactly_one_limit(scenario_dict):
    assert error_of(scenario_dict(stop={"warmup_s": 1})).startswith("stop:")
    assert error_of(scenario_dict(stop={"requests": 10, "time_s": 5})).startswith("stop:")


def test_unknown_profiles(scenario_dict):
    assert error_of(scenario_dict(server={"model": "gpt-9"})).startswith("server.model: unknown model 'gpt-9'")
    msg = error_of(scenario_dict(clients={"count": 1, "arrival": {"kind": "poisson", "rate_per_s": 1},
                                          "edge": {"device": "toaster"}}))
    assert msg.startswith("clients.edge.device: unknown edge device 'toaster'; allowed: imx95")


def test_yaml_syntax_and_encoding_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: .* at line \d+"):
        load_scenario(bad)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_scenario(latin)
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        parse_scenario(["a"])
