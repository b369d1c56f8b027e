"""Re-simulate finished testbed points with a changed simulator model, against the same testbed runs.

    python bench/testbed_resimulate.py RUN_DIR [--uplink-discipline fifo] [--recalibrate-fixed]

Each point's stored `scenario.yaml` (the prediction made before the point ran) is simulated again with only
the named changes: the uplink discipline, and/or the uplink's fixed time per message re-derived from the
same idle calibration requests with `validate.wire_s` (FIFO on the trace). No measurement of a point feeds
its own simulation. Prints mean / p95 latency errors per point, the first testbed run as reference
(warm-up as in the run: the first `warmup_requests` arrivals left out).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import yaml

from edgevlm.sim.scenario import parse_scenario
from edgevlm.sim.summary import summarize
from edgevlm.testbed.config import load_testbed
from edgevlm.testbed.validate import _simulate, compare, idle_handoffs, wire_s, with_changes


def fixed_s(run: Path, tb) -> tuple[float, float]:
    """The uplink's and downlink's software time per message from the idle global_only calibration
    (validate.calibrate_network's formula: the median beyond wire time and propagation)."""
    g = pq.read_table(run / "calibration-global_only" / "events_testbed.parquet").to_pandas()
    g = g[g.status == "ok"]
    up, down = tb.network.uplink, tb.network.downlink
    u = np.median((g.up1_end_s - g.edge_done_s).to_numpy()
                  - wire_s(up, g.edge_done_s.to_numpy(), g.uplink_bytes.to_numpy())) - up.propagation_ms / 1e3
    d = np.median((g.done_s - g.s1_end_s).to_numpy()
                  - wire_s(down, g.s1_end_s.to_numpy(), g.downlink_bytes.to_numpy())) - down.propagation_ms / 1e3
    return max(0.0, float(u)), max(0.0, float(d))


def handoff_s(run: Path) -> float:
    """The mean hand-off of the idle calibration requests' passes that found the server idle."""
    d = []
    for kind in ("global_only", "always_crop"):
        ev = pq.read_table(run / f"calibration-{kind}" / "events_testbed.parquet").to_pandas()
        info = json.loads((run / f"calibration-{kind}" / "events_testbed.json").read_text())
        d.append(idle_handoffs(ev[ev.status == "ok"], info["attention_passes"]))
    return max(0.0, float(np.mean(np.concatenate(d))))


def shifted_profile(src: Path, minus_s: float, dst: Path) -> Path:
    """The profile CSV with every prefill row `minus_s` shorter (the hand-off is added to each pass's prefill)."""
    lines = src.read_text().splitlines()
    out = [lines[0]]
    for line in lines[1:]:
        phase, b, tok, sec = line.split(",")
        out.append(f"{phase},{b},{tok},{float(sec) - minus_s if phase == 'prefill' else float(sec):.6f}")
    dst.write_text("\n".join(out) + "\n")
    return dst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("--uplink-discipline", choices=("ps", "fifo"))
    ap.add_argument("--recalibrate-fixed", action="store_true")
    ap.add_argument("--recalibrate-handoff", action="store_true",
                    help="the per-pass hand-off from idle passes only (validate.idle_handoffs); the round's "
                         "profile shifted by the difference")
    a = ap.parse_args(argv)
    run = Path(a.run)
    tb, _ = load_testbed(run / "TESTBED.yaml")
    up: dict = {}
    if a.uplink_discipline:
        up["discipline"] = a.uplink_discipline
    down: dict = {}
    if a.recalibrate_fixed:
        u, d = fixed_s(run, tb)
        up["propagation_ms"] = tb.network.uplink.propagation_ms + 1e3 * u
        down["propagation_ms"] = tb.network.downlink.propagation_ms + 1e3 * d
    changes: dict = {"network": {"uplink": up, "downlink": down}} if up else {}
    record: dict = {}
    if a.recalibrate_handoff:
        old = json.loads((run / "calibration.json").read_text())["server_start_delay_s"]
        new = handoff_s(run)
        prof = shifted_profile(run / "profile.csv", old - new, run / "profile_resim.csv")
        changes["server"] = {"latency": {"path": str(prof)}}
        record = {"handoff_s_was": old, "handoff_s_now": new}
    out = []
    for sc_path in sorted(run.glob("*/scenario.yaml")):
        pdir = sc_path.parent
        sc = parse_scenario(yaml.safe_load(sc_path.read_text()), source=str(sc_path))
        sc = with_changes(sc, changes) if changes else sc
        _, pooled, _ = _simulate(sc, pdir / "resim", tb.calibration.speed_replications)
        tb_ev = pq.read_table(pdir / "events_testbed.parquet")
        arr = np.sort(tb_ev.column("arrival_s").to_numpy())
        warm = float(arr[min(tb.warmup_requests, len(arr) - 1)]) if tb.warmup_requests else 0.0
        kw = dict(warmup_s=warm, comm=None, components={})
        c = compare(summarize(pooled, **kw), summarize(tb_ev, **kw))
        row = {"point": pdir.name, **{k: c[k]["rel_error"] for k in ("latency_mean_s", "latency_p95_s",
                                                                      "uplink_bytes_per_request")}}
        out.append(row)
        print(f"{row['point']}: mean {100 * row['latency_mean_s']:+.1f} %, p95 {100 * row['latency_p95_s']:+.1f} %",
              flush=True)
    (run / "resimulated.json").write_text(json.dumps({"changes": changes, **record, "points": out}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
