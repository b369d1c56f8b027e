"""adaptive_threshold against the best fixed eta, over seeds (common random numbers within a seed).

Runs scenarios/compare_overload.yaml (overload, 4 req/s) and the same variants at 1/8 of the load
(unloaded), for several seeds, and prints per-seed score goodput (VQA score delivered within the
deadline per second) of adaptive and of the best fixed eta of that seed, and a Student-t 95% CI of
the paired difference. The shipped trace is SYNTHETIC, so these are synthetic numbers.

    python bench/adaptive.py --seeds 5 --requests 20000
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from scipy import stats  # noqa: E402

from edgevlm.sim.compare import run_compare  # noqa: E402

UNLOADED_ETAS = (0.2, 0.3, 0.4, 0.6)


def paired(diffs: list[float]) -> dict:
    d = np.asarray(diffs)
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else None
    return {"mean": float(d.mean()), "ci95_half": half}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=20000)
    args = ap.parse_args(argv)
    out = {}
    for label, scale in (("overload", 1.0), ("unloaded", 0.125)):
        rows, diffs = [], []
        for seed in range(1, args.seeds + 1):
            import yaml

            spec = yaml.safe_load((ROOT / "scenarios" / "compare_overload.yaml").read_text())
            spec["base"] = str(ROOT / "scenarios" / spec["base"])
            spec["set"] = {"seed": seed, "stop": {"requests": args.requests}}
            if scale != 1.0:
                spec["load"] = {"scale": [scale]}
                spec["variants"] = [{"name": f"eta_{e}", "policy": {"kind": "entropy_threshold", "threshold": e}}
                                    for e in UNLOADED_ETAS] + [v for v in spec["variants"] if v["name"] == "adaptive"]
            df = run_compare(spec).set_index("variant")
            fixed = df.drop(index="adaptive")
            best = fixed["score_goodput_per_s"].idxmax()
            ad = df.loc["adaptive"]
            rows.append({"seed": seed, "best_fixed": best,
                         "best_fixed_score_goodput": float(fixed.loc[best, "score_goodput_per_s"]),
                         "adaptive_score_goodput": float(ad["score_goodput_per_s"]),
                         "best_fixed_goodput": float(fixed.loc[best, "goodput_per_s"]),
                         "adaptive_goodput": float(ad["goodput_per_s"]),
                         "adaptive_accuracy": float(ad["accuracy"]),
                         "best_fixed_accuracy": float(fixed.loc[best, "accuracy"])})
            diffs.append(rows[-1]["adaptive_score_goodput"] - rows[-1]["best_fixed_score_goodput"])
            print(json.dumps({label: rows[-1]}), flush=True)
        out[label] = {"per_seed": rows, "paired_difference": paired(diffs),
                      "relative_gain": paired([r["adaptive_score_goodput"] / r["best_fixed_score_goodput"] - 1
                                               for r in rows])}
    print(json.dumps({k: {"paired_difference": v["paired_difference"], "relative_gain": v["relative_gain"]}
                      for k, v in out.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
