"""Shipped scenarios state what a run shows; the stated utilisations must be what a run of them shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgevlm.sim import run
from edgevlm.sim.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
MEASURED = re.compile(r"# What a run shows \(seed (\d+), ([\d,]+) requests.*?\):(.*?)\n(?!#)", re.S)


def stated(path: Path) -> dict[str, float] | None:
    """The utilisations (per cent) a scenario's header comment states, or None if it states none."""
    m = MEASURED.search(path.read_text())
    if m is None:
        return None
    text = m.group(3)
    out = {"seed": int(m.group(1)), "requests": int(m.group(2).replace(",", ""))}
    for key, label in (("uplink", "uplink"), ("gpu", "GPU"), ("edge", "edge NPU")):
        u = re.search(rf"\b{label} (\d+(?:\.\d+)?) %", text)
        if u:
            out[key] = float(u.group(1))
    return out


CASES = sorted(p for p in SCENARIOS.glob("*.yaml") if stated(p))


def test_the_default_cell_scenarios_state_what_a_run_shows():
    names = {p.stem for p in CASES}
    assert {"quickstart", "global_only", "always_crop", "entropy_threshold", "full_edge", "full_cloud"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_stated_utilisations_match_a_run(path):
    want = stated(path)
    sc, _ = load_scenario(path)
    assert sc.seed == want["seed"] and sc.stop.requests == want["requests"]
    got = run(str(path)).summary["utilisation"]
    for key in ("uplink", "gpu", "edge"):
        if key in want:
            assert abs(100 * got[key] - want[key]) <= 1.0, (path.name, key, 100 * got[key], want[key])
