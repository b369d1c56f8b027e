"""The timed accelerator stand-in (testbed/timed.py, `serve --engine timed`): each pass lasts the
simulator's time for that sample (within 1 ms, never less) and answers what the trace says."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from edgevlm.sim.engine import sample_jobs  # noqa: E402
from edgevlm.sim.latency import read_profile  # noqa: E402
from edgevlm.sim.workload import Workload  # noqa: E402
from edgevlm.testbed.timed import PassTimes, TimedEngine, hold_until  # noqa: E402

TRACE = "traces/tiny-scenetext-v2.parquet"
QUALITY = 75
PROFILE = ("phase,batch,tokens,seconds\nprefill,1,60,0.004\nprefill,1,200,0.012\nprefill,2,60,0.006\n"
           "prefill,2,200,0.018\ndecode,1,80,0.0015\ndecode,2,80,0.002\n")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    prof = tmp_path_factory.mktemp("timed") / "profile.csv"
    prof.write_text(PROFILE)
    return TimedEngine.load(TRACE, QUALITY, prof)


@pytest.fixture
def switch_interval():
    """As `edgevlm serve --engine timed` runs (testbed/timed.py SWITCH_INTERVAL_S), restored after."""
    import sys

    from edgevlm.testbed.timed import SWITCH_INTERVAL_S

    prev = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    yield
    sys.setswitchinterval(prev)


def test_pass_times_are_the_simulators_service_times(engine):
    w = engine.workload
    model = read_profile(engine.times.source.split(" ", 1)[1], "x")
    jobs = sample_jobs(w, w.provenance["visual_tokens_per_image"])
    for stage in (1, 0, 2):
        assert [engine.times.pass_s(stage, r) for r in range(5)] == [model.service_s(j) for j in jobs[stage][:5]]
    # a batch is the profile's static batch (joint prefill, lock-step decode), longer than one pass, shorter than two
    b = engine.times.batch_s(1, [0, 1])
    assert max(engine.times.pass_s(1, 0), engine.times.pass_s(1, 1)) < b < engine.times.pass_s(1, 0) + engine.times.pass_s(1, 1)


def test_hold_until_never_returns_early():
    import time

    for d in (0.0005, 0.003, 0.01):
        t = time.perf_counter()
        hold_until(t + d)
        assert time.perf_counter() - t >= d


def test_server_passes_last_the_table_time_and_answer_from_the_trace(engine, switch_interval):
    from fastapi.testclient import TestClient
    from PIL import Image

    from edgevlm.testbed.server import create_app

    buf = io.BytesIO()
    Image.new("RGB", (336, 336), (120, 30, 30)).save(buf, "JPEG")
    img = buf.getvalue()
    w = engine.workload
    errs = []
    with TestClient(create_app(engine, max_queue=8)) as c:
        for r in range(12):
            sid = str(w.sample_id[r])
            j = c.post("/v1/stage1", content=img, headers={"content-type": "image/jpeg"},
                       params={"request_id": r, "sample_id": sid, "image_w": 1024, "image_h": 768,
                               "question": "q?"}).json()
            assert j["answer"] == w.table.column("s1_answer")[r].as_py()
            for col in ("s1_min_entropy", "s1_shannon", "s1_margin"):  # float32 as stored, as the model path
                assert j[col] == [float(v) for v in np.asarray(w.token_values(col)[r], np.float32)]
            errs.append(j["end_s"] - j["start_s"] - engine.times.pass_s(1, r))
            a = c.post("/v1/attention", json={"request_id": r}).json()
            assert a["box"] == [w.table.column(k)[r].as_py() for k in ("bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1")]
            errs.append(a["end_s"] - a["start_s"] - engine.times.pass_s(0, r))
            s2 = c.post("/v1/stage2", content=img, headers={"content-type": "image/jpeg"},
                        params={"request_id": r}).json()
            assert (s2["answer"], s2["tokens"]) == (w.table.column("s2_answer")[r].as_py(), int(w.s2_tokens[r]))
            errs.append(s2["end_s"] - s2["start_s"] - engine.times.pass_s(2, r))
        # a sample the trace does not have is refused before any pass
        bad = c.post("/v1/stage1", content=img, headers={"content-type": "image/jpeg"},
                     params={"request_id": 99, "sample_id": "nope", "image_w": 9, "image_h": 9, "question": "q"})
        assert bad.status_code == 404
    errs = np.array(errs)
    # time.time() stamps around the pass: never shorter (the hold cannot end early; 20 us of clock
    # granularity allowed), within 1 ms for all but a rare preemption of this shared host
    assert errs.min() > -2e-5, errs.min()
    assert np.mean(errs < 1e-3) >= 0.95, json.dumps(errs.tolist())


def test_table_of_pass_times(tmp_path):
    w = Workload.load(TRACE).at_quality(QUALITY)
    rows = "sample_id,s1_s,att_s,s2_s\n" + "".join(f"{s},0.01,0.02,{0.03 + i * 1e-4}\n"
                                                  for i, s in enumerate(w.sample_id))
    (tmp_path / "t.csv").write_text(rows)
    pt = PassTimes.load(tmp_path / "t.csv", w, 64)
    assert pt.pass_s(2, 7) == pytest.approx(0.0307) and pt.pass_s(0, 3) == 0.02
    (tmp_path / "short.csv").write_text("sample_id,s1_s,att_s,s2_s\nx,1,1,1\n")
    from edgevlm.sim.errors import UserError
    with pytest.raises(UserError, match="no row for sample_id"):
        PassTimes.load(tmp_path / "short.csv", w, 64)


def test_static_batches_as_the_simulators_scheduler(engine, switch_interval):
    """max_batch 4: four stage-1 requests sent together run as one batch (same start and end; the
    profile's batch time of their jobs, within 1 ms); a lone one waits max_wait_s for company first."""
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient
    from PIL import Image

    from edgevlm.testbed.server import create_app

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 30, 30)).save(buf, "JPEG")
    w = engine.workload
    app = create_app(engine, max_queue=16, max_batch=4, max_wait_s=0.3)
    with TestClient(app) as c:
        def send(r):
            return c.post("/v1/stage1", content=buf.getvalue(), headers={"content-type": "image/jpeg"},
                          params={"request_id": r, "sample_id": str(w.sample_id[r]), "image_w": 99,
                                  "image_h": 99, "question": "q"}).json()

        with ThreadPoolExecutor(4) as pool:
            out = list(pool.map(send, range(4)))
        lone = send(7)
    assert len({(j["start_s"], j["end_s"]) for j in out}) == 1
    batch = engine.times.model.batch_s([engine.times.jobs[1][r] for r in range(4)])
    assert 0 <= out[0]["end_s"] - out[0]["start_s"] - batch < 1e-3
    assert [j["answer"] for j in out] == [w.table.column("s1_answer")[r].as_py() for r in range(4)]
    assert lone["start_s"] - lone["recv_s"] >= 0.29  # waited for a batch that never filled
    assert 0 <= lone["end_s"] - lone["start_s"] - engine.times.pass_s(1, 7) < 1e-3
    assert app.state.gpu.batches == [4, 1]
