"""`edgevlm check`: a good run passes, and each invariant catches a deliberately corrupted run."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from edgevlm.sim import run
from edgevlm.sim.audit import AUDIT_SCHEMA
from edgevlm.sim.check import _worst_window, check_run_dir
from edgevlm.traces.eventlog import EVENT_SCHEMA
from tests.test_cli import edgevlm


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, synthetic_trace):
    """An overloaded run with crops, admission drops and a saturated uplink, with the audit."""
    from tests.conftest import base_scenario

    sc = base_scenario(synthetic_trace, stop={"requests": 600},
                       clients={"count": 20, "arrival": {"kind": "poisson", "rate_per_s": 0.4},
                                "link_classes": [{"share": 0.5, "uplink_mbps": 100},
                                                 {"share": 0.5, "uplink_mbps": 5}]},
                       server={"replicas": 1, "max_queue": 3})
    out = tmp_path_factory.mktemp("good") / "run"
    summary = run(sc, out, audit=True).summary
    assert summary["counts"]["dropped"] > 0 and summary["retransmission_rate"] > 0
    return out


@pytest.fixture
def bad_run(good_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(good_run, dst)
    return dst


def edit_events(run_dir, fn):
    table = pq.read_table(run_dir / "events.parquet")
    df = fn(table.to_pandas())
    out = pa.Table.from_pandas(df, schema=EVENT_SCHEMA.with_metadata(table.schema.metadata),
                               preserve_index=False)
    pq.write_table(out, run_dir / "events.parquet")


def edit_audit(run_dir, fn):
    df = fn(pq.read_table(run_dir / "audit.parquet").to_pandas())
    pq.write_table(pa.Table.from_pandas(df, schema=AUDIT_SCHEMA, preserve_index=False), run_dir / "audit.parquet")


def edit_summary(run_dir, fn):
    p = run_dir / "summary.json"
    s = json.loads(p.read_text())
    fn(s)
    p.write_text(json.dumps(s))


def failed(run_dir) -> dict[str, list[str]]:
    rep = check_run_dir(run_dir)
    out: dict[str, list[str]] = {}
    for v in rep.violations:
        out.setdefault(v.invariant, []).append(v.message)
    return out


def test_a_good_run_passes_every_invariant(good_run):
    rep = check_run_dir(good_run)
    assert rep.ok, rep.format()
    assert rep.skipped == [] and rep.requests == 600 and rep.audit_rows > 600


def test_without_the_audit_the_checks_needing_it_are_listed_as_skipped(bad_run):
    (bad_run / "audit.parquet").unlink()
    rep = check_run_dir(bad_run)
    assert rep.ok
    assert any(s.startswith("link_capacity") for s in rep.skipped)
    assert any(s.startswith("gpu busy time") for s in rep.skipped)


def test_missing_summary_means_an_unfinished_run(bad_run):
    (bad_run / "summary.json").unlink()
    assert "did not finish" in failed(bad_run)["files"][0]


def test_garbage_events_file(bad_run):
    (bad_run / "events.parquet").write_bytes(b"PAR1 not really")
    assert "not readable Parquet" in failed(bad_run)["files"][0]


def test_scenario_edited_after_the_run(bad_run):
    p = bad_run / "scenario.yaml"
    d = yaml.safe_load(p.read_text())
    d["seed"] = 99
    p.write_text(yaml.safe_dump(d))
    msgs = failed(bad_run)["scenario"]
    assert any("hash" in m for m in msgs) and any("seed" in m for m in msgs)


def test_duplicate_terminal_record(bad_run):
    import pandas as pd

    edit_events(bad_run, lambda df: pd.concat([df, df[df.request_id == 7]]))
    assert any("request 7 has more than one terminal record" in m for m in failed(bad_run)["terminal"])


def test_request_without_terminal_record(bad_run):
    edit_events(bad_run, lambda df: df[df.request_id != 42])
    f = failed(bad_run)
    assert any("request 42 arrived but has no terminal record" in m for m in f["terminal"])


def test_unknown_status(bad_run):
    def corrupt(df):
        df.loc[df.request_id == 3, "status"] = "lost"
        return df
    edit_events(bad_run, corrupt)
    assert any("'lost'" in m for m in failed(bad_run)["terminal"])


def test_time_going_backwards(bad_run):
    def corrupt(df):
        i = df.index[(df.status == "ok")][5]
        start, end = float(df.loc[i, "s1_start_s"]), float(df.loc[i, "s1_end_s"])
        df.loc[i, "s1_start_s"], df.loc[i, "s1_end_s"] = end, start
        return df
    edit_events(bad_run, corrupt)
    f = failed(bad_run)
    assert list(f) == ["monotone"], f
    assert "s1_end_s" in f["monotone"][0] and "is before s1_start_s" in f["monotone"][0]


def test_latency_that_disagrees_with_the_timestamps(bad_run):
    def corrupt(df):
        i = df.index[df.status == "ok"][0]
        df.loc[i, "latency_s"] += 0.5
        return df
    edit_events(bad_run, corrupt)
    assert any("latency_s" in m for m in failed(bad_run)["monotone"])


def test_a_transfer_faster_than_the_link(bad_run):
    prop_s = 0.020

    def corrupt(df):
        up = df.index[(df.resource == "uplink") & (df.bytes > 30000)][0]
        df.loc[up, "end_s"] = df.loc[up, "start_s"] + prop_s + 1e-4  # 30 kB in 0.1 ms: 2.4 Gbit/s on 20 Mbit/s
        return df
    edit_audit(bad_run, corrupt)
    f = failed(bad_run)
    assert list(f) == ["link_capacity"], f
    assert "uplink carried" in f["link_capacity"][0] and "20 Mbit/s" in f["link_capacity"][0]


def test_a_message_faster_than_light(bad_run):
    def corrupt(df):
        down = df.index[df.resource == "downlink"][0]
        df.loc[down, "end_s"] = df.loc[down, "start_s"] + 0.001  # propagation is 20 ms
        return df
    edit_audit(bad_run, corrupt)
    assert any("propagation" in m for m in failed(bad_run)["link_capacity"])


def test_window_check_finds_jointly_infeasible_transfers():
    cap = 8e6  # 1 MB/s
    # each fits in its own interval, together they need 2 s but have only 1.5 s
    a, b = np.array([0.0, 0.5]), np.array([1.0, 1.5])
    bits = np.array([8e6, 8e6])
    s, t, carried = _worst_window(a, b, bits, cap)
    assert (s, t, carried) == (0.0, 1.5, 16e6)
    assert _worst_window(np.array([0.0, 0.5]), np.array([1.0, 2.0]), bits, cap) is None  # back to back
    assert _worst_window(np.array([0.0]), np.array([0.999]), np.array([8e6]), cap) is not None


def test_window_check_agrees_with_brute_force():
    rng = np.random.default_rng(5)
    cap = 1e6
    for trial in range(200):
        n = int(rng.integers(1, 12))
        a = rng.uniform(0, 5, n).round(1)
        b = a + rng.uniform(0.05, 2, n).round(1)
        bits = rng.uniform(0.1, 1.2, n) * cap
        brute = any(bits[(a >= s) & (b <= t)].sum() > cap * (t - s) + 1.0 for s in a for t in b if t >= s)
        found = _worst_window(a, b, bits, cap)
        assert (found is not None) == brute, (a, b, bits)
        if found:
            s, t, carried = found
            assert carried > cap * (t - s)


def test_event_bytes_that_the_links_never_carried(bad_run):
    def corrupt(df):
        df.loc[df.request_id == 11, "uplink_bytes"] += 100
        return df
    edit_events(bad_run, corrupt)
    msgs = failed(bad_run)["bytes"]
    assert any("event log has" in m and "uplink" in m for m in msgs)
    assert any("request 11 logs" in m for m in msgs)


def test_link_totals_edited_in_the_summary(bad_run):
    edit_summary(bad_run, lambda s: s["downlink"].update(bytes_carried=s["downlink"]["bytes_carried"] - 4))
    assert any("downlink" in m for m in failed(bad_run)["bytes"])


def test_a_transfer_missing_from_the_audit(bad_run):
    edit_audit(bad_run, lambda df: df.drop(df.index[df.resource == "downlink"][3]))
    assert any("downlink" in m for m in failed(bad_run)["bytes"])


def test_gpu_over_100_percent_in_the_summary(bad_run):
    edit_summary(bad_run, lambda s: s["gpu"].update(utilisation=1.2))
    assert "must lie in [0, 1]" in failed(bad_run)["gpu"][0]


def test_two_gpu_passes_at_once_on_one_replica(bad_run):
    def corrupt(df):
        g = df.index[df.resource == "gpu"]
        dur = df.loc[g[4], "end_s"] - df.loc[g[4], "start_s"]
        df.loc[g[4], "start_s"] = df.loc[g[3], "start_s"]
        df.loc[g[4], "end_s"] = df.loc[g[3], "start_s"] + dur
        return df
    edit_audit(bad_run, corrupt)
    assert any("2 GPU passes run at once" in m for m in failed(bad_run)["gpu"])


def test_gpu_busy_time_disagreeing_with_the_summary(bad_run):
    edit_summary(bad_run, lambda s: s["gpu"].update(utilisation=s["gpu"]["utilisation"] * 0.9))
    assert any("busy" in m for m in failed(bad_run)["gpu"])


def test_summary_that_does_not_match_its_events(bad_run):
    edit_summary(bad_run, lambda s: s["latency_s"]["p95"].update(value=s["latency_s"]["p95"]["value"] + 0.01))
    edit_summary(bad_run, lambda s: s["counts"].update(ok=s["counts"]["ok"] + 1))
    msgs = failed(bad_run)["summary"]
    assert any(m.startswith("latency_s.p95.value") for m in msgs)
    assert any(m.startswith("counts.ok") for m in msgs)


def test_cli_exit_codes(good_run, bad_run, tmp_path):
    ok = edgevlm("check", str(good_run))
    assert ok.returncode == 0 and "OK" in ok.stdout
    edit_summary(bad_run, lambda s: s["counts"].update(arrived=601))
    proc = edgevlm("check", str(bad_run))
    assert proc.returncode == 1 and "summary: counts.arrived is 601" in proc.stderr
    assert "Traceback" not in proc.stderr
    none = edgevlm("check", str(tmp_path / "nothing"))
    assert none.returncode == 2 and "not found" in none.stderr  # issue 22 item 6
