"""Seed 004 (Hsu et al., arXiv 2604.26508, progressive semantic communication; abstract only): the
1 Mbit/s experiment of scenarios/compare_seed004_1mbps.yaml, measured with analysis/seed004.py, the
abstract's claims beside ours.

The abstract gives claims, no numbers; each becomes a rule:
  network latency      at the 1 Mbit/s uplink the entropy-driven progressive variant's mean network latency
                       (seconds its messages spend on the links: level 1 up, each refinement round's request
                       down and increment up, the answer down; analysis.seed004.network_s) is at most half of
                       full-cloud's, and at most half of full-edge's ("significantly reduces").
  semantic consistency at level 1 (the highest compression) the answer equals the one on the uncompressed
                       tokens in >= 90 % of requests, and accuracy stays >= 90 % of the finest level's.
End-to-end latency (edge compute + network + server) is reported beside network latency; the abstract
claims only network latency. A latency claim counts only if every run it uses is stable
(analysis.seed004.stability: served rate = offered rate within the CI, latency not drifting).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from edgevlm.analysis import seed004 as s4
from edgevlm.analysis.reproduce.items import Check, Item, MissingColumn, guarded
from edgevlm.analysis.reproduce.simruns import deadline_accuracy, missing_columns, scenarios_dir
from edgevlm.sim.compare import load_compare
from edgevlm.analysis.events import run_scenario
from edgevlm.sim.compare import run_compare

COMPARE_FILE = "compare_seed004_1mbps.yaml"
SCALE_FILE = "compare_seed004_scale.yaml"
PROGRESSIVE = "progressive"  # the entropy-driven variant of both compare files
SIGNIFICANT = 0.5  # "significantly lower": at most half
FIDELITY = 0.90
PAPER = {"network_latency": "progressive reduces network latency significantly vs full-edge and full-cloud at 1 Mbps",
         "fidelity": "high semantic consistency even under high compression"}
NATIVE_NOTE = ("full_cloud (resolution: native) sends the original image (original_jpeg_bytes) and the server resizes "
               "it to the vision input; the trace has no answer on that resize, so its accuracy is the global "
               "image's s1_score: an approximation")


def _spec(name: str, workload, trace_path: Path) -> tuple[dict, Path, dict[str, list[str]]]:
    """A compare file's spec on this trace, without the variants the trace cannot run (-> missing columns)."""
    spec, base_dir = load_compare(scenarios_dir() / name)
    data = spec.model_dump(exclude_none=True)
    data["set"] = {**data.get("set", {}), "trace": str(Path(trace_path).resolve())}
    skipped, variants = {}, []
    for v in data["variants"]:
        miss = missing_columns(workload, v["policy"])
        (skipped.__setitem__(v["name"], miss) if miss else variants.append(v))
    data["variants"] = variants
    return data, base_dir, skipped


def _rows(df: pd.DataFrame, name_of=lambda v: v) -> pd.DataFrame:
    """analysis.seed004.run_row for every run of a compare, plus accuracy within the deadline."""
    rows = []
    for _, r in df.iterrows():
        run = Path(r["run_dir"])
        sc = run_scenario(run)
        rows.append({"variant": name_of(r["variant"]), **s4.run_row(run),
                     "deadline_accuracy": deadline_accuracy(run, float(sc.get("stop", {}).get("warmup_s") or 0.0)),
                     "run_dir": str(run)})
    return pd.DataFrame(rows)


def simulate(workload, trace_path: Path, out: Path, progress: bool = True, requests: int | None = None):
    """The 1 Mbit/s compare on this trace (with audit); returns (rows, skipped variant -> missing columns, spec)."""
    spec, base_dir, skipped = _spec(COMPARE_FILE, workload, trace_path)
    df = run_compare(spec, out, progress=progress, base_dir=base_dir, audit=True,
                     overrides=None if requests is None else {"stop": {"requests": requests}})
    return _rows(df), skipped, spec


def simulate_scale(workload, trace_path: Path, out: Path, one: pd.DataFrame, progress: bool = True,
                   devices=None, requests: int | None = None) -> pd.DataFrame:
    """compare_seed004_scale.yaml (N = 10, 100, 1000; the variants named <variant>_N<N>) on this trace,
    restricted to `devices`; N = 1 rows are the 1 Mbit/s compare's (`one`)."""
    spec, base_dir, _ = _spec(SCALE_FILE, workload, trace_path)
    if devices is not None:
        spec["variants"] = [v for v in spec["variants"] if v["set"]["clients"]["count"] in devices]
    parts = [one.assign()] if devices is None or 1 in devices else []
    if spec["variants"]:
        df = run_compare(spec, out, progress=progress, base_dir=base_dir, audit=True,
                         overrides=None if requests is None else {"stop": {"requests": requests}})
        parts.append(_rows(df, lambda v: str(v).rsplit("_N", 1)[0]))
    return pd.concat(parts, ignore_index=True).sort_values(["devices", "variant"], kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------- items


def _row(rows: pd.DataFrame, name: str, skipped: dict) -> pd.Series:
    if name in skipped:
        raise MissingColumn(skipped[name])
    hit = rows[rows["variant"] == name]
    if hit.empty:
        raise MissingColumn([f"variant {name} in {COMPARE_FILE}"])
    return hit.iloc[0]


def _stable_check(*rows) -> Check:
    bad = [f"{r['variant']} (served {r['served_per_s']:.4g}/s vs offered {r['offered_per_s']:.4g}/s, drift "
           f"{r['latency_drift']:.2f})" for r in rows if not r["stable"]]
    return Check("runs stable" + (": unstable " + ", ".join(bad) if bad else ""), not bad, "true")


def network_vs(rows, skipped, other: str, notes: list[str]) -> Item:
    prog, base = _row(rows, PROGRESSIVE, skipped), _row(rows, other, skipped)
    ratio = prog["network_mean_s"] / base["network_mean_s"] if base["network_mean_s"] > 0 else float("inf")
    label = other.replace("_", "-")
    it = Item(f"s4_network_vs_{other.split('_')[1]}", f"Network latency at 1 Mbit/s: progressive vs {label}",
              f"At a 1 Mbit/s uplink the progressive scheme's network latency is well below {label}'s.",
              paper={"claim": PAPER["network_latency"]}, figure="latency_1mbps.png")
    it.ours = {"progressive_network_mean_s": prog["network_mean_s"], "progressive_network_p95_s": prog["network_p95_s"],
               f"{other}_network_mean_s": base["network_mean_s"], f"{other}_network_p95_s": base["network_p95_s"],
               "ratio": ratio, "progressive_end_to_end_mean_s": prog["e2e_mean_s"],
               f"{other}_end_to_end_mean_s": base["e2e_mean_s"],
               "end_to_end_ratio": prog["e2e_mean_s"] / base["e2e_mean_s"]}
    it.checks = [Check(f"progressive / {label} network latency", ratio, "at_most", SIGNIFICANT, 0.0),
                 _stable_check(prog, base)]
    it.notes += notes
    return it


def network_vs_cloud(rows, skipped, spec) -> Item:
    native = any(v["name"] == "full_cloud" and v["policy"].get("resolution") == "native" for v in spec["variants"])
    it = network_vs(rows, skipped, "full_cloud", [NATIVE_NOTE + "; its latency is exact."] if native else [])
    edge = _row(rows, PROGRESSIVE, skipped)["edge_mean_s"]
    it.notes.append(f"End to end (not the abstract's claim) progressive takes {it.ours['progressive_end_to_end_mean_s']:.2f} s "
                    f"against full-cloud's {it.ours['full_cloud_end_to_end_mean_s']:.2f} s: the device spends {edge:.2f} s "
                    "on the vision tower and codec encoder before anything is sent (sim/progressive_cost.py).")
    return it


def network_vs_edge(rows, skipped, spec) -> Item:
    it = network_vs(rows, skipped, "full_edge", [
        "Full-edge runs the whole VLM on the device and sends only the answer (a few bytes), so its network "
        "latency is the propagation delay; progressive sends at least level 1 at 1 Mbit/s."])
    edge, prog = it.ours["full_edge_end_to_end_mean_s"], it.ours["progressive_end_to_end_mean_s"]
    it.notes.append(f"End to end (not the abstract's claim) progressive takes {prog:.2f} s against full-edge's "
                    f"{edge:.2f} s: the device's VLM pass costs more than progressive's uplink.")
    return it


def codec_eval(workload) -> tuple[dict, Path] | None:
    """The codec evaluation JSON (models.codec_eval) of the trace's progressive codec (same kind and level
    groups as the provenance records) with the most samples, next to the codec the provenance names; None if none."""
    prog = workload.provenance.get("progressive") or {}
    if not prog.get("path") or not prog.get("kind"):
        return None
    best = None
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        for f in sorted((root / prog["path"]).parent.glob("eval_*.json")):
            d = json.loads(f.read_text())
            c = d.get("codecs", {}).get(prog["kind"], {})
            same_codec = c.get("group_sizes") == prog.get("group_sizes")
            if "same_answer_as_uncompressed" in c and same_codec and (best is None or d["n_samples"] > best[0]["n_samples"]):
                best = (d, f)
        if best:
            return best
    return None


def levels(workload) -> pd.DataFrame:
    """Per level: cumulative bytes and accuracy over the trace, and the same-answer rate of the codec evaluation
    when there is one (analysis.seed004.level_table; the trace format has no per-level answer column)."""
    miss = missing_columns(workload, {"kind": "progressive"})
    if miss:
        raise MissingColumn(miss)
    ev = codec_eval(workload)
    t = s4.level_table(workload.path, None if ev is None else ev[1])
    if ev is not None:
        d, f = ev
        t.attrs["same_answer_source"] = (f"{f.name} ({d['n_samples']} held-out scenes, dataset {d.get('dataset')}, "
                                         f"model {d.get('model')}): measured by models.codec_eval, not in the trace")
    return t


def fidelity(workload) -> Item:
    t = levels(workload)
    first, last = t.iloc[0], t.iloc[-1]
    share = first["accuracy"] / last["accuracy"] if last["accuracy"] else None
    it = Item("s4_fidelity", "Accuracy per level: the highest compression (level 1) vs the finest level",
              "Even at the highest compression the answers stay semantically consistent.",
              paper={"claim": PAPER["fidelity"]})
    it.ours = {f"level_{int(r.level)}": {"cum_bytes": r.cum_bytes, "accuracy": r.accuracy} for r in t.itertuples()}
    it.checks = [Check(f"level-1 / level-{len(t)} accuracy", share, "at_least", FIDELITY, 0.0)]
    it.notes.append(f"Accuracy and bytes: mean over the trace's {int(first['trace_samples'])} rows (prog_score, "
                    "prog_bytes); bytes are the tiny model's tokens (see the scenario's comment), not CLIP ViT-L's.")
    return it


def same_answer(workload) -> Item:
    t = levels(workload)
    if "same_answer" not in t:
        raise MissingColumn(["a codec evaluation eval_*.json (models.codec_eval) next to the trace's codec "
                             "(provenance progressive.path): the trace has no per-level answers"])
    it = Item("s4_same_answer", "Semantic consistency per level: same answer as on the uncompressed tokens",
              "Even at the highest compression the answers stay semantically consistent.",
              paper={"claim": PAPER["fidelity"]})
    it.ours = {f"level_{int(r.level)}": {"same_answer": r.same_answer, "accuracy": r.eval_accuracy}
               for r in t.itertuples()}
    it.checks = [Check("same-answer rate at level 1", float(t["same_answer"].iloc[0]), "at_least", FIDELITY, 0.0)]
    it.notes.append("Same-answer rate and accuracy from " + t.attrs["same_answer_source"] + ".")
    return it


def items(workload, rows, skipped, spec) -> list[Item]:
    specs = [
        (lambda: network_vs_cloud(rows, skipped, spec), "s4_network_vs_cloud", "Network latency: progressive vs full-cloud",
         PAPER["network_latency"]),
        (lambda: network_vs_edge(rows, skipped, spec), "s4_network_vs_edge", "Network latency: progressive vs full-edge",
         PAPER["network_latency"]),
        (lambda: fidelity(workload), "s4_fidelity", "Accuracy per level", PAPER["fidelity"]),
        (lambda: same_answer(workload), "s4_same_answer", "Same answer as on the uncompressed tokens, per level",
         PAPER["fidelity"]),
    ]
    return [guarded(f, key, title, claim, {"claim": claim}) for f, key, title, claim in specs]


# ---------------------------------------------------------------- tables and figure

TABLE_COLUMNS = {"variant": "variant", "policy": "policy", "stable": "stable", "accuracy": "accuracy",
                 "network_mean_s": "network mean (s)", "network_p95_s": "network p95 (s)",
                 "e2e_mean_s": "end-to-end mean (s)", "e2e_p95_s": "end-to-end p95 (s)", "edge_mean_s": "edge (s)",
                 "uplink_bytes": "uplink bytes/req", "levels_mean": "levels used", "deadline_accuracy":
                 "accuracy within deadline"}


def table(rows: pd.DataFrame, skipped: dict, spec: dict) -> pd.DataFrame:
    """The 1 Mbit/s comparison as the report shows it, with the variants the trace cannot run."""
    t = rows[list(TABLE_COLUMNS)].rename(columns=TABLE_COLUMNS).astype(object)
    native = {v["name"] for v in spec["variants"] if v["policy"].get("resolution") == "native"}
    t["note"] = [("unstable; " if not s else "") + ("approximation: " + NATIVE_NOTE if v in native else "")
                 for v, s in zip(rows["variant"], rows["stable"])]
    for name, miss in skipped.items():
        t.loc[len(t)] = {"variant": name, "note": "not available: needs " + ", ".join(miss)}
    return t


def level_rows(workload) -> pd.DataFrame | None:
    try:
        t = levels(workload)
    except MissingColumn:
        return None
    keep = [c for c in ("level", "cum_bytes", "accuracy", "same_answer", "eval_accuracy", "eval_samples",
                        "trace_samples") if c in t]
    return t[keep]


def figure(rows: pd.DataFrame, path: Path) -> Path:
    """Network and end-to-end latency (log) and accuracy per variant."""
    from edgevlm.analysis.plots import plt  # defers matplotlib
    from edgevlm.analysis.reproduce.figures import save  # defers matplotlib

    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.6))
    y = np.arange(len(rows))
    ax = axes[0]
    ax.barh(y - 0.2, rows["network_mean_s"].clip(lower=1e-3), height=0.4, label="network (uplink + downlink), mean")
    ax.barh(y + 0.2, rows["e2e_mean_s"], height=0.4, label="end-to-end, mean")
    ax.set_xscale("log")
    ax.set_yticks(y, [v + ("" if s else " (unstable)") + (" *" if v == "full_cloud" else "")
                      for v, s in zip(rows["variant"], rows["stable"])])
    ax.invert_yaxis()
    ax.set_xlabel("seconds (log scale)")
    ax.set_title("Latency at a 1 Mbit/s uplink", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax = axes[1]
    ax.barh(y, rows["accuracy"], color="tab:green")
    ax.set_yticks(y, rows["variant"])
    ax.invert_yaxis()
    ax.set_xlabel("accuracy (mean score)")
    ax.set_title("Accuracy (* full_cloud: native resolution, scored as the global image)", fontsize=9)
    return save(fig, path)
