"""Shared fixtures: small SYNTHETIC traces and scenario dicts built in code."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hypothesis import settings

from edgevlm.traces.synthetic import write_synthetic

# CI machines are shared and noisy: no per-example deadline, and a fixed example sequence so a
# green run stays green (the examples still cover the strategies; `--hypothesis-seed` varies them).
settings.register_profile("edgevlm", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("edgevlm")


@pytest.fixture(autouse=True)
def _no_flush_to_zero_leaks():
    """The extract CLI turns on torch's flush-denormal (a process-wide CPU flag) for speed; switch it
    off after each test so later tests (Hypothesis float strategies) see IEEE-754 subnormals again."""
    yield
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_flush_denormal(False)


@pytest.fixture(scope="session")
def synthetic_trace(tmp_path_factory) -> Path:
    """A 400-row SYNTHETIC trace file (tests only)."""
    return write_synthetic(tmp_path_factory.mktemp("traces") / "syn.parquet", n_samples=400, seed=7)


def base_scenario(trace: Path | str, **overrides) -> dict:
    """A small valid scenario dict; `overrides` replace top-level blocks."""
    sc = {
        "name": "test",
        "seed": 3,
        "trace": str(trace),
        "stop": {"requests": 2000},
        "clients": {"count": 20, "arrival": {"kind": "poisson", "rate_per_s": 0.05},
                    "link_classes": [{"share": 0.5, "uplink_mbps": 10}, {"share": 0.5, "uplink_mbps": 2}]},
        "network": {"uplink": {"capacity_mbps": 20, "propagation_ms": 20},
                    "downlink": {"capacity_mbps": 100, "propagation_ms": 20}},
        "server": {"replicas": 1, "model": "llava-1.5-7b", "scheduler": {"kind": "fifo"}},
        "policy": {"kind": "entropy_threshold", "metric": "min_entropy", "threshold": 0.6, "tokens": 5,
                   "jpeg_quality": 75},
        "slo": {"deadline_s": 2.0},
    }
    sc.update(copy.deepcopy(overrides))
    return sc


@pytest.fixture
def scenario_dict(synthetic_trace):
    return lambda **kw: base_scenario(synthetic_trace, **kw)
