"""`edgevlm trace inspect TRACE`: provenance, rows per question type, distributions, stage accuracy,
and per question type at every JPEG quality: accuracy (global-only, attention crop, oracle crop,
HD) and mean global / crop / original JPEG bytes. A v1 trace's scores are the same at every quality;
the output says so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def inspect_trace(path: str | Path) -> dict:
    """Everything `trace inspect` prints, as a dict of tables (DataFrames) and provenance."""
    from edgevlm.sim.workload import Workload

    root = Workload.load(path)
    wl = root.at_quality(75) if 75 in root.qualities else root  # distributions at q75 where measured
    t = wl.table
    qt = (t.column("question_type").to_pandas().fillna("(none)") if "question_type" in t.column_names
          else pd.Series(["(none)"] * wl.n))
    k5 = {m: wl.first_k_mean(c, 5) for m, c in (("min_entropy", "s1_min_entropy"), ("shannon", "s1_shannon"),
                                                  ("margin", "s1_margin"))}
    q75 = wl.qualities.index(75) if 75 in wl.qualities else len(wl.qualities) - 1
    df = pd.DataFrame({"question_type": qt.to_numpy(), "s1_score": wl.s1_score, "s2_score": wl.s2_score,
                       "s1_tokens": wl.s1_tokens, **{f"{m}_k5": v for m, v in k5.items()},
                       "global_kB": wl.global_bytes[:, q75] / 1e3, "local_kB": wl.local_bytes[:, q75] / 1e3,
                       "original_kB": wl.original_bytes[:, q75] / 1e3})
    for col in ("s2_oracle_score", "hd_score", "edge_score"):
        v = wl.optional(col)
        if v is not None:
            df[col] = v
    score_cols = [c for c in ("s1_score", "s2_score", "s2_oracle_score", "hd_score", "edge_score") if c in df]
    by_type = df.groupby("question_type")[score_cols].mean()
    by_type.insert(0, "rows", df.groupby("question_type").size())
    pooled = df[score_cols].mean().to_frame("all").T
    pooled.insert(0, "rows", len(df))
    dist_cols = ["s1_tokens", "min_entropy_k5", "shannon_k5", "margin_k5", "global_kB", "local_kB", "original_kB"]
    dist = df[dist_cols].describe(percentiles=[0.1, 0.5, 0.9]).T[["mean", "min", "10%", "50%", "90%", "max"]]
    return {"provenance": wl.provenance, "rows": wl.n, "accuracy": pd.concat([by_type, pooled]),
            "distributions": dist, "quality_for_bytes": wl.qualities[q75], "frame": df,
            "per_quality": per_quality_table(root, qt.to_numpy()), "v1": not root.per_quality,
            "view_quality": wl.quality}


#: Score columns of the per-quality table: (trace column at one quality, table column).
QUALITY_SCORES = (("s1_score", "acc_global_only"), ("s2_score", "acc_attention_crop"),
                  ("s2_oracle_score", "acc_oracle_crop"), ("hd_score", "acc_hd"))


def per_quality_table(root, qtypes: np.ndarray) -> pd.DataFrame:
    """Per question type (and pooled) at every JPEG quality: mean scores and mean JPEG kB."""
    frames = []
    for k, q in enumerate(root.qualities):
        view = root.at_quality(q)
        df = pd.DataFrame({"question_type": qtypes, "jpeg_quality": q,
                           "global_kB": view.global_bytes[:, k] / 1e3, "crop_kB": view.local_bytes[:, k] / 1e3,
                           "original_kB": view.original_bytes[:, k] / 1e3})
        for col, name in QUALITY_SCORES:
            v = view.s1_score if col == "s1_score" else view.s2_score if col == "s2_score" else view.optional(col)
            if v is not None:
                df[name] = v
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    cols = [c for c in df.columns if c not in ("question_type", "jpeg_quality")]
    by = df.groupby(["question_type", "jpeg_quality"])[cols].mean()
    pooled = df.groupby("jpeg_quality")[cols].mean()
    pooled.index = pd.MultiIndex.from_product([["all"], pooled.index], names=["question_type", "jpeg_quality"])
    out = pd.concat([by, pooled])
    out.insert(0, "rows", pd.concat([df.groupby(["question_type", "jpeg_quality"]).size(),
                                     pd.Series(df.groupby("jpeg_quality").size().to_numpy(), index=pooled.index)]))
    return out


def plot_trace(info: dict, out_dir: str | Path) -> list[Path]:
    """Histograms of min-entropy by stage-1 correctness, and of byte sizes, as PNGs."""
    from edgevlm.analysis import plots

    plots.setup_style(synthetic=info["provenance"].get("source_kind") == "synthetic")
    import matplotlib.pyplot as plt
    import seaborn as sns

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = info["frame"].assign(stage1=np.where(info["frame"]["s1_score"] >= 0.5, "correct", "wrong"))
    paths = []
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sns.histplot(df, x="min_entropy_k5", hue="stage1", stat="density", common_norm=False, bins=30, ax=ax)
    ax.set_xlabel("stage-1 min-entropy, mean of first 5 tokens (bits)")
    ax.set_title("Min-entropy: correct vs wrong stage-1 answers")
    paths.append(plots.save(fig, out / "trace_min_entropy.png"))
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    long = df.melt(value_vars=["global_kB", "local_kB"], var_name="image", value_name="kB")
    sns.histplot(long, x="kB", hue="image", bins=40, ax=ax)
    ax.set_xlabel(f"JPEG size at quality {info['quality_for_bytes']} (kB)")
    ax.set_title("Global and crop image sizes")
    paths.append(plots.save(fig, out / "trace_bytes.png"))
    return paths


def format_inspect(info: dict) -> str:
    prov = info["provenance"]
    label = "  ** SYNTHETIC: invented numbers, tests only **" if prov.get("source_kind") == "synthetic" else ""
    from edgevlm.sim.workload import V1_QUALITY_NOTE

    at = "" if info["view_quality"] is None else f" at JPEG quality {info['view_quality']}"
    lines = [f"format: v{prov.get('format_version')}"
             + (f"  ({V1_QUALITY_NOTE})" if info["v1"] else "  (every quality-dependent value measured per quality)"),
             f"source_kind: {prov.get('source_kind')}{label}", f"model: {prov.get('model_id')}",
             f"dataset: {prov.get('dataset_id')}", f"created: {prov.get('created_utc')}",
             f"generator: {prov.get('generator')}", f"rows: {info['rows']}", "",
             f"mean scores by question type{at}:", info["accuracy"].round(3).to_string(), "",
             f"distributions (bytes at JPEG quality {info['quality_for_bytes']}):",
             info["distributions"].round(3).to_string(), "",
             "per question type and JPEG quality: mean scores and JPEG kB"
             + (f" ({V1_QUALITY_NOTE}: only the bytes change)" if info["v1"] else "") + ":",
             info["per_quality"].round(3).to_string(),
             "(acc_oracle_crop: mean over the rows with a ground-truth box only; NaN where a type has none)"]
    if prov.get("notes"):
        lines.insert(6, f"notes: {prov['notes']}")
    return "\n".join(lines)
