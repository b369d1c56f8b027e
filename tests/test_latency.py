"""Latency models: roofline against the DESIGN.md §7 reference figures, measured-profile CSVs, batch forms."""

from __future__ import annotations

import pytest

from edgevlm.sim import run
from edgevlm.sim.errors import ConfigError
from edgevlm.sim.latency import Job, Roofline, read_profile
from edgevlm.sim.profiles import HARDWARE, MODELS

JOB = Job(1, 1, 576, 20, 8)


def roofline(model="llava-1.5-7b", hardware="a100-80gb"):
    return Roofline(MODELS[model], HARDWARE[hardware])


def test_7b_decode_at_batch_1_on_a100_is_within_2x_of_llama_cpp():
    """DESIGN §7: llama.cpp measured ~13.5 ms/token for LLaVA-1.5-7B fp16 on an A100."""
    step = roofline().iteration_s((), 1, 600.0)
    assert 13.5e-3 / 2 <= step <= 13.5e-3 * 2
    # and never faster than reading the weights at full HBM bandwidth: 14.1 GB / 2039 GB/s
    assert step >= 7.06e9 * 2 / 2039e9


def test_7b_decode_on_h100_is_faster_than_a100_and_above_the_bandwidth_floor():
    """DESIGN §7: weight bytes / HBM bandwidth is ~4 ms/token on an H100 SXM (3.35 TB/s)."""
    h100, a100 = roofline(hardware="h100-sxm").iteration_s((), 1, 600.0), roofline().iteration_s((), 1, 600.0)
    assert 7.06e9 * 2 / 3350e9 <= h100 < a100
    assert h100 < 2 * 12e-3  # llama.cpp measured ~12 ms/token on an H100 PCIe


def test_7b_prefill_rate_on_a100_is_within_2x_of_llama_cpp():
    """DESIGN §7: prefill ~5-7k tokens/s with llama.cpp."""
    job = Job(0, 1, 576, 20, 0)  # the attention pass: a bare prefill, no vision encoder
    rate = 596 / roofline().service_s(job)
    assert 5000 / 2 <= rate <= 7000 * 2


def test_roofline_decode_is_memory_bound_at_small_batch_and_compute_bound_at_large():
    r = roofline()
    steps = {b: r.iteration_s((), b, b * 600.0) for b in (1, 8, 64, 512)}
    assert steps[8] < 1.3 * steps[1]  # weights dominate: batching is almost free
    assert steps[512] > 3 * steps[1]  # KV bytes and FLOPs take over
    # service_s sums the prefill and the T-1 decode steps at growing context
    want = r.iteration_s([JOB], 0, 0.0) + sum(r.iteration_s((), 1, 596.0 + k) for k in range(7))
    assert r.service_s(JOB) == pytest.approx(want, rel=1e-12)


def test_vision_encoder_runs_for_stages_1_and_2_but_not_the_attention_pass():
    r, m = roofline(), MODELS["llava-1.5-7b"]
    vis = m.vision_tflops * 1e12 / (312e12 * 0.4)
    assert r.service_s(Job(1, 1, 576, 20, 1)) - r.service_s(Job(0, 1, 576, 20, 1)) == pytest.approx(vis)
    assert 0.38 < m.vision_tflops < 0.42  # CLIP ViT-L/14-336 + projector


def test_model_that_does_not_fit_is_a_clear_error(scenario_dict):
    with pytest.raises(ConfigError, match=r"server\.hardware: model 'llava-1.5-13b' .* does not fit in 'l4'"):
        run(scenario_dict(server={"model": "llava-1.5-13b", "hardware": "l4"}))


# ---------------------------------------------------------------- profile CSVs


def write(tmp_path, text: str, name="prof.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = """phase,batch,tokens,seconds,gpu
prefill,1,100,0.010,a100
prefill,1,1100,0.110,a100
prefill,4,100,0.030,a100
prefill,4,1100,0.330,a100
decode,1,0,0.010,a100
decode,1,1000,0.012,a100
decode,8,0,0.014,a100
decode,8,1000,0.030,a100
"""


def test_profile_interpolates_linearly_in_tokens_and_batch(tmp_path):
    prof = read_profile(write(tmp_path, GOOD), "server.latency")
    assert prof.prefill(1, 600) == pytest.approx(0.060)
    assert prof.prefill(4, 1100) == pytest.approx(0.330)
    assert prof.prefill(2, 600) == pytest.approx(0.060 + (0.180 - 0.060) / 3)
    assert prof.prefill(1, 2100) == pytest.approx(0.210)  # extrapolated from the last segment
    assert prof.decode(8, 500) == pytest.approx(0.022)
    assert prof.max_batch == 4
    job = Job(1, 1, 576, 24, 3)  # 600 prefill tokens, then decode steps at context 600 and 601
    want = 0.060 + (0.010 + 0.002 * 0.600) + (0.010 + 0.002 * 0.601)
    assert prof.service_s(job) == pytest.approx(want)


def test_profile_drives_a_run(scenario_dict, tmp_path):
    path = write(tmp_path, GOOD)
    ev = run(scenario_dict(server={"latency": {"kind": "profile", "path": str(path)},
                                   "scheduler": {"kind": "continuous", "max_batch": 4}},
                           policy={"kind": "global_only"}, stop={"requests": 500})).events
    assert (ev["status"] == "ok").all() and (ev["s1_end_s"] > ev["s1_start_s"]).all()


@pytest.mark.parametrize("text,needle", [
    ("phase,batch,seconds\nprefill,1,0.1\n", r"missing column tokens; required: phase, batch, tokens, seconds"),
    ("", r"empty file"),
    ("phase,batch,tokens,seconds\nprefill,1,100,0.1\nprefill,1,50,0.2\ndecode,1,0,0.01\n",
     r"line 3: column 'tokens' must increase within phase=prefill, batch=1; got 50 after 100"),
    ("phase,batch,tokens,seconds\nprefill,1,100,0.1\nprefill,1,100,0.2\ndecode,1,0,0.01\n",
     r"line 3: column 'tokens' must increase"),
    ("phase,batch,tokens,seconds\nprefill,1,abc,0.1\n", r"line 2: column 'tokens' is 'abc', not a number"),
    ("phase,batch,tokens,seconds\nprefil,1,100,0.1\n", r"line 2: column 'phase' is 'prefil'; allowed: prefill, decode"),
    ("phase,batch,tokens,seconds\nprefill,0,100,0.1\n", r"line 2: column 'batch' must be a positive integer"),
    ("phase,batch,tokens,seconds\nprefill,1,100,-1\n", r"line 2: column 'seconds' must be > 0"),
    ("phase,batch,tokens,seconds\nprefill,1,100,0.1\n", r"no 'decode' rows at batch 1"),
    ("phase,batch,tokens,seconds\nprefill,1,100\n", r"line 2: 3 fields, the header has 4"),
])
def test_bad_profile_csv_is_one_clear_error(tmp_path, text, needle):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        read_profile(path, "server.latency")
    msg = str(exc.value)
    assert msg.startswith("server.latency.path: ") and str(path) in msg and "\n" not in msg
    assert __import__("re").search(needle, msg), msg


def test_missing_profile_and_too_large_batch_through_run(scenario_dict, tmp_path):
    with pytest.raises(ConfigError, match=r"server\.latency\.path: latency profile not found: .*nope\.csv"):
        run(scenario_dict(server={"latency": {"kind": "profile", "path": str(tmp_path / "nope.csv")}}))
    path = write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match=r"server\.scheduler\.max_batch: 16 is above the largest batch .*\(4\)"):
        run(scenario_dict(server={"latency": {"kind": "profile", "path": str(path)},
                                  "scheduler": {"kind": "static", "max_batch": 16}}))


def test_bad_profile_through_the_cli_exits_2_with_one_line(scenario_dict, tmp_path):
    from tests.test_cli import edgevlm, write as write_yaml

    path = write(tmp_path, "phase,batch,seconds\nprefill,1,0.1\n")
    d = scenario_dict(server={"latency": {"kind": "profile", "path": str(path)}})
    proc = edgevlm("run", str(write_yaml(tmp_path, d)), "--no-progress")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgevlm: error:")]
    assert len(errors) == 1 and "server.latency.path" in errors[0] and "missing column tokens" in errors[0]


def test_profile_config_needs_a_path(scenario_dict):
    from edgevlm.sim.scenario import parse_scenario

    with pytest.raises(ConfigError, match=r"^server\.latency\.path: required field is missing"):
        parse_scenario(scenario_dict(server={"latency": {"kind": "profile"}}))
