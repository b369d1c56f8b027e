"""Issue 22 item 3: every registered policy x bandwidth-trace kind x link discipline x where the trace
applies (the shared uplink, or each client's access link) x scheduler, read from the registries, so a
new kind joins the matrix by registering.

Each case runs a small scenario through the CLI: it either finishes and passes `edgevlm check`, or
exits 2 with `edgevlm: error:` lines that name a field; never a traceback.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import get_args

import pytest
import yaml

from edgevlm.sim.bandwidth import BandwidthTraceConfig
from edgevlm.cli import main
from edgevlm.sim.network import LinkConfig
from edgevlm.sim.policies import policies
from edgevlm.sim.server import schedulers
from edgevlm.traces.synthetic import write_synthetic
from tests.test_cli import ROOT


def _kinds_of(union) -> list[str]:
    return [get_args(m.model_fields["kind"].annotation)[0] for m in get_args(get_args(union)[0])]


CAPACITY_KINDS = _kinds_of(BandwidthTraceConfig)
DISCIPLINES = list(get_args(LinkConfig.model_fields["discipline"].annotation))
WHERE = ["shared", "per-client"]
SCHEDULERS = schedulers.kinds()
POLICIES = policies.kinds()


def shipped_policy_examples() -> dict[str, dict]:
    """The first policy block of each kind in the shipped scenario and compare files (else just the kind)."""
    found: dict[str, dict] = {}
    for f in sorted((ROOT / "scenarios").glob("*.yaml")):
        data = yaml.safe_load(f.read_text()) or {}
        blocks = [data.get("policy")] + [v.get("policy") for v in data.get("variants", [])]
        for b in blocks:
            if isinstance(b, dict) and b.get("kind") in POLICIES:
                found.setdefault(b["kind"], b)
    return {k: found.get(k, {"kind": k}) for k in POLICIES}


EXAMPLES = shipped_policy_examples()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("matrix")
    mahimahi = d / "up.mahi"
    mahimahi.write_text("\n".join(str(t) for t in range(0, 1000, 1)) + "\n")  # 12 Mbit/s, looping
    csv = d / "up.csv"
    csv.write_text("t_s,mbps\n0,8\n1,2.5\n2,15\n")
    return {"trace": write_synthetic(d / "syn.parquet", n_samples=60, seed=3), "mahimahi": mahimahi, "csv": csv,
            "dir": d}


def capacity(kind: str, files) -> dict:
    return {"kind": kind, "mbps": 12.0} if kind == "constant" else {"kind": kind, "path": str(files[kind])}


def scenario(policy: str, cap: str, discipline: str, where: str, scheduler: str, files) -> dict:
    link = {"discipline": discipline, "propagation_ms": 5}
    if where == "shared":
        uplink = {**link, "bandwidth_trace": capacity(cap, files)}
        classes = [{"share": 1.0, "uplink_mbps": 8}]
    else:
        uplink = {**link, "capacity_mbps": 20}
        classes = [{"share": 0.5, "bandwidth_trace": capacity(cap, files)}, {"share": 0.5, "uplink_mbps": 4}]
    return {
        "name": "m", "seed": 1, "trace": str(files["trace"]), "stop": {"requests": 25},
        "clients": {"count": 4, "arrival": {"kind": "poisson", "rate_per_s": 0.5}, "link_classes": classes},
        "network": {"uplink": uplink, "downlink": {"capacity_mbps": 50, "discipline": discipline}},
        "server": {"scheduler": {"kind": scheduler}}, "policy": EXAMPLES[policy], "slo": {"deadline_s": 2.0},
    }


def cases():
    for p in POLICIES:
        for cap in CAPACITY_KINDS:
            for disc in DISCIPLINES:
                for where in WHERE:
                    for sched in SCHEDULERS:
                        yield pytest.param(p, cap, disc, where, sched, id=f"{p}-{cap}-{disc}-{where}-{sched}")


def _cli(*args) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(list(args))
    return rc, err.getvalue()


def test_matrix_covers_every_registered_kind():
    assert set(POLICIES) >= {"global_only", "always_crop", "entropy_threshold", "adaptive_threshold", "full_cloud"}
    assert set(CAPACITY_KINDS) == {"constant", "mahimahi", "csv"} and set(DISCIPLINES) == {"fifo", "ps"}
    assert set(SCHEDULERS) >= {"fifo", "static", "continuous"}


@pytest.mark.parametrize("policy,cap,discipline,where,scheduler", list(cases()))
def test_case_runs_and_checks_or_names_the_field(files, tmp_path, policy, cap, discipline, where, scheduler):
    path = tmp_path / "sc.yaml"
    path.write_text(yaml.safe_dump(scenario(policy, cap, discipline, where, scheduler, files)))
    out = tmp_path / "run"
    rc, err = _cli("run", str(path), "--out", str(out), "-q", "--no-progress")
    if rc == 2:
        lines = err.strip().splitlines()
        assert lines and all(line.startswith("edgevlm: error: ") for line in lines), err
        assert all(": " in line[len("edgevlm: error: "):] for line in lines), err  # "field: message"
        assert not out.exists() or not (out / "summary.json").exists()
        return
    assert rc == 0, err
    rc, err = _cli("check", str(out))
    assert rc == 0, err
