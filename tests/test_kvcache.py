"""KV-cache memory in continuous batching (issue 27): capacity, admission, preemption, M/M/c.

With KV room for exactly c sequences and pass times that do not depend on the batch, a continuous
batcher is c parallel servers fed by one FCFS queue: M/M/c when answer lengths are geometric.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from edgevlm.sim import run
from edgevlm.sim.check import check_run_dir
from edgevlm.sim.engine import Simulation
from edgevlm.sim.latency import Job, Parametric, Roofline
from edgevlm.sim.profiles import HARDWARE, MODELS
from edgevlm.sim.server.kvcache import SERIES_POINTS

from tests.test_queueing_theory import assert_theory_in_ci
from tests.test_server import drive, erlang_c

STAGE2 = Job(2, 2, 2 * 576, 20, 40)  # LLaVA-1.5-7B stage 2: two images' visual tokens


def test_kv_capacity_from_the_profiles_by_hand():
    """(memory x 0.9 - 7.06e9 params x 2 B) / (2 x 32 layers x 4096 x 2 B = 0.5 MiB per token)."""
    per_token = 2 * 32 * 4096 * 2
    assert MODELS["llava-1.5-7b"].kv_bytes_per_token(2.0) == per_token == 512 * 1024
    for hw, tokens in (("a100-80gb", 110_397), ("l4", 14_266)):
        got = Roofline(MODELS["llava-1.5-7b"], HARDWARE[hw]).kv_capacity_tokens
        assert int(got) == tokens == int((HARDWARE[hw].memory_gb * 0.9e9 - 7.06e9 * 2) / per_token)
    # an L4 holds 12 stage-2 sequences of 1,191 tokens at most; an A100 92
    assert 14_266 // (STAGE2.prefill_tokens + STAGE2.out_tokens - 1) == 11


def _instrumented(monkeypatch):
    """Record the KV tokens every roofline iteration holds: context + new prompts + one per decode."""
    seen = []
    orig = Roofline.iteration_s

    def wrapped(self, new_jobs, n_decode, ctx_tokens):
        seen.append((ctx_tokens + sum(j.prefill_tokens for j in new_jobs) + n_decode, n_decode + len(new_jobs)))
        return orig(self, new_jobs, n_decode, ctx_tokens)

    monkeypatch.setattr(Roofline, "iteration_s", wrapped)
    return seen


@pytest.mark.parametrize("alloc", ["reserve", "on_demand"])
def test_admission_never_exceeds_the_kv_capacity(monkeypatch, alloc):
    """A backlog of stage-2 jobs on an L4: KV, not max_batch, bounds the batch, and never overflows."""
    seen = _instrumented(monkeypatch)
    rng = np.random.default_rng(3)
    jobs = [Job(2, 2, 1152, 20, int(t)) for t in rng.integers(1, 300, 64)]
    _, soj, srv = drive({"hardware": "l4", "scheduler": {"kind": "continuous", "max_batch": 64,
                                                         "kv_allocation": alloc}}, 400, 40.0, jobs, seed=2)
    cap = srv.reps[0].kv.capacity
    assert int(cap) == 14_266
    held = np.array([h for h, n in seen if n > 1])
    assert held.size > 1000 and held.max() <= cap
    kv = srv.stats(srv.end_s)["kv"]
    assert kv["peak_shared_tokens"] <= cap and kv["peak_tokens"] > 0.9 * cap  # memory binds...
    assert kv["peak_sequences"] < 64  # ...well below max_batch
    assert kv["admitted"] == 400 + kv["preempted"]
    assert len(kv["use_series"]["max_tokens"]) <= SERIES_POINTS and max(kv["use_series"]["max_tokens"]) == kv["peak_tokens"]
    assert np.isfinite(soj).all() and (soj > 0).all()
    if alloc == "on_demand":
        assert kv["preempted"] > 0 and kv["recomputed_tokens"] >= kv["preempted"] * 1153


def test_without_the_limit_the_same_backlog_overflows_an_l4(monkeypatch):
    seen = _instrumented(monkeypatch)
    _, _, srv = drive({"hardware": "l4", "scheduler": {"kind": "continuous", "max_batch": 64,
                                                       "kv_cache_limit": False}}, 200, None, [STAGE2])
    assert max(h for h, _ in seen) > 3 * 14_266
    assert srv.stats(srv.end_s)["kv"]["capacity_tokens"] is None


def _l4_on_demand(scenario_dict, rate_per_client: float, requests: int) -> dict:
    """60 clients on a fast network in front of one L4 with on-demand KV allocation."""
    return scenario_dict(server={"hardware": "l4", "scheduler": {"kind": "continuous", "max_batch": 64,
                                                                 "kv_allocation": "on_demand"}},
                         clients={"count": 60, "arrival": {"kind": "poisson", "rate_per_s": rate_per_client},
                                  "link_classes": [{"share": 1, "uplink_mbps": 1000}]},
                         network={"uplink": {"capacity_mbps": 10_000}, "downlink": {"capacity_mbps": 10_000}},
                         stop={"requests": requests})


def test_on_demand_preemption_conserves_requests(scenario_dict, monkeypatch):
    """Two-stage gate on an L4 under overload, answers 60x the synthetic trace's (so decode growth
    overflows): preemptions happen, and every request still ends in exactly one terminal record."""
    _long_answers(monkeypatch)
    sc = _l4_on_demand(scenario_dict, rate_per_client=0.5, requests=1000)
    res = run(sc)
    kv = res.summary["gpu"]["kv"]
    assert kv["preempted"] > 0 and kv["peak_shared_tokens"] <= kv["capacity_tokens"], kv
    assert kv["admitted"] == res.summary["gpu"]["jobs"] + kv["preempted"]
    ev = res.events
    assert ev["request_id"].is_unique and len(ev) == 1000
    counts = res.summary["counts"]
    assert counts["ok"] + counts["dropped"] + counts["expired"] == 1000 == (ev["status"].notna()).sum()
    two = ev["s2_end_s"].notna()
    assert two.any() and (ev.loc[two, "s2_end_s"] > ev.loc[two, "s2_start_s"]).all()


def test_mmc_with_kv_room_for_c_sequences_quick(monkeypatch):
    """Cheap companion of the slow check: without the KV bound the same load sees no queue at all."""
    out = _mmc(monkeypatch, c=2, jobs=6000, kv=False, seed=5)
    assert out["wait"].max() < 0.01 and out["peak"] > 2


def _mmc(monkeypatch, c: int, jobs: int, seed: int, kv: bool = True, alloc: str = "reserve", rho: float = 0.7,
         mean_s: float = 0.1, step_s: float = 0.002):
    """Sequences of P = 10,000 prompt tokens and geometric answers (mean mean_s/step_s tokens), every
    pass (prefill, decode or both, any batch) taking step_s: a sequence's service is its answer length
    x step_s, exponential in the limit. KV room c·P + P - 1 holds c sequences, never c + 1 (answers stay
    far below P)."""
    monkeypatch.setattr(Parametric, "iteration_s", lambda self, new_jobs, n_decode, ctx_tokens: self.decode)
    p = 10_000
    lam = rho * c / mean_s
    out = np.random.default_rng(seed + 7).geometric(step_s / mean_s, jobs)
    sched = {"kind": "continuous", "max_batch": 64, "kv_allocation": alloc}
    sched |= {"kv_capacity_tokens": c * p + p - 1} if kv else {"kv_cache_limit": False}
    wait, soj, srv = drive({"scheduler": sched, "latency": {"kind": "parametric", "vision_s_per_image": 0.0,
                                                            "prefill_tokens_per_s": 1e12,
                                                            "decode_s_per_token": step_s}},
                           jobs, lam, [Job(1, 0, 0, p, int(t)) for t in out], seed=seed)
    kvs = srv.stats(srv.end_s)["kv"]
    return {"wait": wait, "soj": soj, "lam": lam, "peak": kvs["peak_sequences"], "preempted": kvs["preempted"]}


@pytest.mark.slow
@pytest.mark.parametrize("c,alloc,jobs,seed", [(1, "reserve", 120_000, 1), (2, "reserve", 100_000, 2),
                                               (2, "on_demand", 100_000, 3), (4, "reserve", 100_000, 4)])
def test_continuous_with_kv_room_for_c_is_mmc(monkeypatch, c, alloc, jobs, seed):
    """M/M/c at ρ = 0.7: W = C(c, a)/(cμ − λ) + 1/μ (Erlang C) inside the batch-means CI of the sojourn."""
    mean_s = 0.1
    out = _mmc(monkeypatch, c, jobs, seed, alloc=alloc, mean_s=mean_s)
    lam = out["lam"]
    assert out["peak"] == c and out["preempted"] == 0
    theory = erlang_c(c, lam * mean_s) / (c / mean_s - lam) + mean_s
    assert_theory_in_ci(out["soj"][jobs // 20:], theory)


def test_edgevlm_check_verifies_the_kv_cache(scenario_dict, tmp_path):
    sc = _l4_on_demand(scenario_dict, rate_per_client=1.0, requests=400)
    run(sc, tmp_path / "run")
    rep = check_run_dir(tmp_path / "run")
    assert rep.ok, rep.format()
    p = tmp_path / "run" / "summary.json"
    good = json.loads(p.read_text())
    kv = good["gpu"]["kv"]
    assert kv["peak_shared_tokens"] > 0.9 * kv["capacity_tokens"]  # memory binds in this run
    for edit, msg in (({"peak_shared_tokens": kv["capacity_tokens"] + 1}, "held by two or more sequences"),
                      ({"admitted": kv["admitted"] + 1}, "admissions")):
        bad = json.loads(json.dumps(good))
        bad["gpu"]["kv"].update(edit)
        p.write_text(json.dumps(bad))
        rep = check_run_dir(tmp_path / "run")
        assert any(msg in v.message for v in rep.violations if v.invariant == "gpu"), rep.format()


def test_static_batches_fit_their_padded_kv_when_limited(monkeypatch):
    """Static batching pads every job to the longest prompt and answer: with the limit on, an L4 takes
    only as many stage-2 jobs as k x (longest prompt + longest answer - 1) <= 14,266 tokens allows."""
    sizes = []
    orig = Roofline.batch_s

    def wrapped(self, jobs):
        n = max(j.prefill_tokens for j in jobs) + max(j.out_tokens for j in jobs) - 1
        sizes.append((len(jobs), len(jobs) * n))
        return orig(self, jobs)

    monkeypatch.setattr(Roofline, "batch_s", wrapped)
    rng = np.random.default_rng(4)
    jobs = [Job(2, 2, 1152, 20, int(t)) for t in rng.integers(2, 300, 64)]
    sched = {"kind": "static", "max_batch": 32, "max_wait_s": 0.0}
    _, soj, srv = drive({"hardware": "l4", "scheduler": sched | {"kv_cache_limit": True}}, 300, None, jobs)
    held = np.array([h for k, h in sizes if k > 1])
    assert held.size > 10 and held.max() <= 14_266 and max(k for k, _ in sizes) < 32
    kv = srv.stats(srv.end_s)["kv"]
    assert kv["peak_shared_tokens"] == held.max() and kv["admitted"] == 300 and (soj > 0).all()
    sizes.clear()
    drive({"hardware": "l4", "scheduler": sched}, 300, None, jobs)  # off (default): batches of 32 as before
    assert max(h for _, h in sizes) > 3 * 14_266 and {k for k, _ in sizes} == {32, 300 % 32}


def _long_answers(monkeypatch, factor: int = 60):
    """Answers `factor` x the synthetic trace's, so decode growth overflows the L4's KV cache."""
    orig = Simulation._build_jobs

    def long_answers(self):
        return {k: [replace(j, out_tokens=factor * j.out_tokens) for j in js] for k, js in orig(self).items()}

    monkeypatch.setattr(Simulation, "_build_jobs", long_answers)


def _rewrite(path, column: str, row: int, value) -> None:
    """Plant a value in one row of a Parquet file (what a bug or a hand edit would leave)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    vals = t.column(column).to_pylist()
    vals[row] = value
    field = t.schema.field(column)
    t = t.set_column(t.schema.get_field_index(column), field, pa.array(vals, field.type))
    pq.write_table(t, path)


def test_check_verifies_every_step_from_server_steps(scenario_dict, monkeypatch, tmp_path):
    """--audit writes one row per iteration; check holds it to the capacity on every step and to
    admissions = jobs + preemptions, and names the step when a planted row breaks either."""
    import pyarrow.parquet as pq

    _long_answers(monkeypatch)
    sc = _l4_on_demand(scenario_dict, rate_per_client=0.5, requests=400)
    res = run(sc, tmp_path / "run", audit=True)
    kv, gpu = res.summary["gpu"]["kv"], res.summary["gpu"]
    steps = pq.read_table(tmp_path / "run" / "server_steps.parquet").to_pandas()
    assert len(steps) == gpu["iterations"] and (steps["capacity_tokens"] == kv["capacity_tokens"]).all()
    assert kv["preempted"] > 0 and steps["preempted"].sum() == kv["preempted"] == sum(kv["use_series"]["preempted"])
    assert steps["admitted"].sum() == gpu["jobs"] + kv["preempted"] == kv["admitted"]
    shared = steps[steps["sequences"] > 1]
    assert 0.9 * kv["capacity_tokens"] < shared["kv_tokens"].max() <= kv["capacity_tokens"]
    assert steps["end_s"].is_monotonic_increasing and steps["kv_tokens"].max() == kv["peak_tokens"]
    rep = check_run_dir(tmp_path / "run")
    assert rep.ok and not any("KV cache on every step" in s for s in rep.skipped), rep.format()

    p = tmp_path / "run" / "server_steps.parquet"
    good = p.read_bytes()
    i = int(shared.index[len(shared) // 2])
    _rewrite(p, "kv_tokens", i, kv["capacity_tokens"] + 1)
    rep = check_run_dir(tmp_path / "run")
    msgs = [v.message for v in rep.violations if v.invariant == "gpu"]
    assert any(f"row {i})" in m and f"{kv['capacity_tokens'] + 1} tokens held by" in m and "over capacity" in m
               for m in msgs), rep.format()
    p.write_bytes(good)
    _rewrite(p, "admitted", i, int(steps["admitted"][i]) + 1)
    rep = check_run_dir(tmp_path / "run")
    assert any("admit" in v.message and "preemptions" in v.message for v in rep.violations), rep.format()
    p.write_bytes(good)
    assert check_run_dir(tmp_path / "run").ok


def test_server_steps_only_with_a_kv_model_and_the_audit(scenario_dict, tmp_path):
    """The default FIFO server writes no server_steps.parquet even audited; a KV run without --audit
    says the per-step check was skipped."""
    run(scenario_dict(stop={"requests": 200}), tmp_path / "fifo", audit=True)
    assert (tmp_path / "fifo" / "audit.parquet").exists() and not (tmp_path / "fifo" / "server_steps.parquet").exists()
    rep = check_run_dir(tmp_path / "fifo")
    assert rep.ok and not any("KV" in s for s in rep.skipped), rep.format()
    run(_l4_on_demand(scenario_dict, rate_per_client=0.5, requests=200), tmp_path / "kv")
    assert not (tmp_path / "kv" / "server_steps.parquet").exists()
    rep = check_run_dir(tmp_path / "kv")
    assert rep.ok and any("KV cache on every step" in s for s in rep.skipped), rep.format()


def test_report_shows_kv_counters_and_use_figure(scenario_dict, monkeypatch, tmp_path):
    """A compare of an L4 with on-demand KV (long answers: preemptions) and the FIFO server: the report's
    KV table has the L4 run only, with summary.json's counters, and the KV-use figure is drawn."""
    import yaml

    from edgevlm.analysis.report import build_report
    from edgevlm.sim.compare import run_compare

    _long_answers(monkeypatch)
    policy = {"kind": "entropy_threshold", "threshold": 0.5}
    spec = {"name": "kv", "base": _l4_on_demand(scenario_dict, rate_per_client=0.5, requests=300),
            "variants": [{"name": "l4", "policy": policy},
                         {"name": "fifo", "policy": policy, "set": {"server": {"scheduler": None}}}]}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(spec))
    df = run_compare(tmp_path / "c.yaml", tmp_path / "out")
    df.to_parquet(tmp_path / "out" / "results.parquet")
    rep = build_report([tmp_path / "out"], tmp_path / "rep", tradeoff=False)
    kv = json.loads((tmp_path / "out" / "runs" / "l4" / "summary.json").read_text())["gpu"]["kv"]
    assert kv["preempted"] > 0
    t = rep.kv_table
    assert list(t["variant"]) == ["l4"]  # the FIFO run has no KV model
    row = t.iloc[0]
    assert row["admissions"] == f"{kv['admitted']:,}" and row["preemptions"] == f"{kv['preempted']:,}"
    assert row["capacity (tokens)"] == "14,266" and row["peak in use (tokens)"].startswith(f"{kv['peak_tokens']:,} (")
    png = rep.figures["kv_use"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    html_text, md = rep.html_path.read_text(), rep.md_path.read_text()
    assert "<table" in html_text.split("<h2>KV cache</h2>")[1][:200] and "id=\"kv\"" in html_text
    assert "## KV cache" in md and "![kv_use](kv_use.png)" in md


def _steps(server: dict, jobs: list, n: int):
    """Run n jobs queued at t=0 and return the server's per-step KV records (sim.audit.StepLog)."""
    from edgevlm.sim.audit import StepLog

    log = StepLog(None)

    def attach(srv):
        for i, use in enumerate(srv.kv_uses()):
            use.steps = log.recorder(i, use.capacity)

    _, soj, srv = drive(server, n, None, jobs, setup=attach)
    assert np.isfinite(soj).all()
    return log.close().to_pandas(), srv.stats(srv.end_s)["kv"]


@pytest.mark.parametrize("block,watermark,admitted,at,preempted", [(1, 0.0, 6, 2, 1), (16, 0.0, 4, 13, 2),
                                                                 (16, 0.25, 3, 13, 1)])
def test_on_demand_kv_blocks_and_watermark_by_hand(block, watermark, admitted, at, preempted):
    """Prompts of 20 tokens, 39 decode steps, room for 128 KV tokens (8 blocks of 16), all queued at t=0.
    Token by token 6 prompts fit (120 tokens), and two iterations later their growth (126 + 6 > 128)
    preempts the newest. In blocks each prompt holds 2, so 4 fit; they fill their second block at 32
    tokens, 13 iterations in, when 4 sequences need 12 of the 8 blocks: the two newest are preempted.
    A watermark of 25% (2 blocks) must stay free at admission: 3 fit, and at 32 tokens 9 blocks of 8
    preempt one."""
    sched = {"kind": "continuous", "max_batch": 64, "kv_allocation": "on_demand", "kv_capacity_tokens": 128,
             "kv_block_tokens": block, "kv_watermark": watermark}
    steps, kv = _steps({"scheduler": sched}, [Job(1, 0, 0, 20, 40)], 10)
    assert kv["capacity_tokens"] == 128 and steps["admitted"].iloc[0] == admitted
    assert steps["kv_tokens"].iloc[0] == admitted * (20 if block == 1 else 32)
    assert steps["preempted"].iloc[:at].sum() == 0 and steps["preempted"].iloc[at] == preempted
    shared = steps[steps["sequences"] > 1]
    assert (shared["kv_tokens"] <= 128).all() and (steps["kv_tokens"] % block == 0).all()
    assert steps["admitted"].sum() == 10 + kv["preempted"] == kv["admitted"]
    # every admission beside running sequences left the watermark free (25%: 2 blocks = 32 tokens)
    joined = steps[(steps["admitted"] > 0) & (steps["sequences"] > 1)]
    assert (joined["kv_tokens"] <= 128 - int(watermark * 8) * 16).all()


def test_reserve_books_whole_blocks():
    """Reserving final lengths of 59 tokens: token by token two fit in 120; in blocks of 16 the capacity is
    7 blocks (112 tokens) and each reserves 4 (64), so one runs at a time."""
    for block, first, cap in ((1, 2, 120), (16, 1, 112)):
        sched = {"kind": "continuous", "max_batch": 64, "kv_capacity_tokens": 120, "kv_block_tokens": block}
        steps, kv = _steps({"scheduler": sched}, [Job(1, 0, 0, 20, 40)], 6)
        assert kv["capacity_tokens"] == cap and steps["admitted"].iloc[0] == first
        assert kv["peak_sequences"] == first and kv["preempted"] == 0 and kv["admitted"] == 6


def test_blocks_and_watermark_in_a_run_pass_check(scenario_dict, tmp_path):
    """vLLM's settings (16-token blocks, 1% watermark) on the L4: capacity 891 blocks = 14,256 tokens,
    every step in whole blocks and within it, `edgevlm check` clean; the defaults leave the scenario's
    stored YAML without the new keys."""
    import pyarrow.parquet as pq

    sc = _l4_on_demand(scenario_dict, rate_per_client=1.0, requests=300)
    sc["server"]["scheduler"] |= {"kv_block_tokens": 16, "kv_watermark": 0.01}
    res = run(sc, tmp_path / "run", audit=True)
    kv = res.summary["gpu"]["kv"]
    assert kv["capacity_tokens"] == 891 * 16 == 14_256
    steps = pq.read_table(tmp_path / "run" / "server_steps.parquet").to_pandas()
    assert (steps["kv_tokens"] % 16 == 0).all() and steps.loc[steps["sequences"] > 1, "kv_tokens"].max() <= 14_256
    assert kv["peak_shared_tokens"] > 0.9 * 14_256
    rep = check_run_dir(tmp_path / "run")
    assert rep.ok, rep.format()
    assert "kv_block_tokens" in (tmp_path / "run" / "scenario.yaml").read_text()
    run(_l4_on_demand(scenario_dict, rate_per_client=1.0, requests=50), tmp_path / "plain")
    assert "kv_block_tokens" not in (tmp_path / "plain" / "scenario.yaml").read_text()
