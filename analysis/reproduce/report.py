"""report.html (self-contained, figures embedded) and reproduce.json for one seed's reproduction."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from edgevlm.analysis.reproduce.items import NOT_AVAILABLE, REPRODUCED, Item, _plain, fmt
from edgevlm.traces import atomic_write

FORMAT_VERSION = 1


@dataclass
class Reproduction:
    """Everything one `edgevlm reproduce SEED` run found."""

    seed: str
    paper: str
    trace: dict[str, Any]
    items: list[Item]
    figures: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # title -> table shown after the items
    at_scale: dict[str, Any] | None = None  # {"table", "rankings", "summary", "figure"}
    notes: list[str] = field(default_factory=list)
    paper_setting: str = "LLaVA-1.5-7B on TextVQA"  # the paper's model and data, for the provenance line

    def to_json(self) -> dict:
        out = {"format_version": FORMAT_VERSION, "seed": self.seed, "paper": self.paper, "trace": _plain(self.trace),
               "our_numbers_come_from": provenance_line(self.trace, self.paper_setting), "notes": self.notes,
               "verdicts": {i.key: i.verdict for i in self.items}, "items": [i.to_json() for i in self.items],
               "tables": {k: _records(v) for k, v in self.tables.items()}}
        if self.at_scale is not None:
            out["at_scale"] = {"summary": _plain(self.at_scale["summary"]),
                               "rankings": _records(self.at_scale["rankings"]),
                               "points": _records(self.at_scale["table"])}
        return out


def _records(df: pd.DataFrame) -> list[dict]:
    return _plain(json.loads(df.to_json(orient="records")))


def trace_info(workload) -> dict[str, Any]:
    p = workload.provenance
    return {"path": str(workload.path), "source_kind": p.get("source_kind"), "model_id": p.get("model_id"),
            "dataset_id": p.get("dataset_id"), "rows": workload.n, "format_version": p.get("format_version"),
            "jpeg_qualities": list(workload.qualities)}


def provenance_line(trace: dict, paper_setting: str = "LLaVA-1.5-7B on TextVQA") -> str:
    """Plainly where our numbers come from, by the trace's source_kind."""
    kind = trace.get("source_kind")
    who = f"{trace.get('model_id')} on {trace.get('dataset_id')}"
    if kind == "real":
        return f"Our numbers come from a real trace: {who}."
    if kind == "synthetic":
        return f"SYNTHETIC trace ({who}): invented numbers for tests; they describe no model."
    return (f"Our numbers come from the tiny model and its procedural scenes ({who}, source_kind {kind}), not from "
            f"{paper_setting} as in the paper: a verdict says whether the paper's effect appears in this "
            "setting, and the paper's values are not expected. Pass --trace with a real trace to compare a real model.")


def write(rep: Reproduction, out: Path) -> tuple[Path, Path]:
    """Write out/reproduce.json and out/report.html (atomically); returns both paths."""
    js, page = out / "reproduce.json", out / "report.html"
    text = json.dumps(rep.to_json(), indent=1, sort_keys=False, allow_nan=False)
    atomic_write(js, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
    doc = render(rep)
    atomic_write(page, lambda tmp: Path(tmp).write_text(doc, encoding="utf-8"))
    return js, page


def _flat(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dict to (dotted key, scalar) pairs; lists are left out (they are in reproduce.json)."""
    if isinstance(d, dict):
        return [kv for k, v in d.items() for kv in _flat(v, f"{prefix}{k}.")]
    if isinstance(d, (list, tuple)):
        return []
    return [(prefix.rstrip("."), d)]


def _kv(d: dict) -> str:
    pairs = _flat(d)
    return "<br>".join(f"{html.escape(k)}: {html.escape(fmt(v))}" for k, v in pairs) or "–"


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"


CSS = ("body{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}"
       "table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border:1px solid #ccc;padding:3px 7px;"
       "vertical-align:top}th{background:#f3f3f3}.warn{color:#a00}.reproduced{color:#176b17;font-weight:bold}"
       ".differs{color:#a35200;font-weight:bold}.na{color:#777;font-weight:bold}"
       "img{max-width:100%;border:1px solid #eee;margin:6px 0}.note{color:#555;font-size:13px}pre.note{white-space:pre-wrap}")


def _cls(verdict: str) -> str:
    return {REPRODUCED: "reproduced", NOT_AVAILABLE: "na"}.get(verdict, "differs")


def render(rep: Reproduction) -> str:
    title = f"Reproducing {rep.seed}: {rep.paper}"
    kind = rep.trace.get("source_kind")
    where = provenance_line(rep.trace, rep.paper_setting)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p class='{'warn' if kind != 'real' else ''}'><b>{html.escape(where)}</b></p>",
             f"<p>Trace: {html.escape(Path(str(rep.trace.get('path'))).name)} ({rep.trace.get('rows')} rows, "
             f"format v{rep.trace.get('format_version')}, JPEG qualities {rep.trace.get('jpeg_qualities')}).</p>"]
    parts += [f"<pre class='note'>{html.escape(n)}</pre>" for n in rep.notes]
    counts = {v: sum(i.verdict == v for i in rep.items) for v in (REPRODUCED, "differs", NOT_AVAILABLE)}
    parts.append(f"<h2>Verdicts</h2><p>{counts[REPRODUCED]} reproduced, {counts['differs']} differ, "
                 f"{counts[NOT_AVAILABLE]} not available.</p>")
    parts.append("<table id='items'><thead><tr><th>item</th><th>paper</th><th>ours</th><th>verdict</th></tr></thead><tbody>")
    for it in rep.items:
        ours = "<br>".join(f"{html.escape(c.name)}: {html.escape(fmt(c.ours))}" for c in it.checks) or "–"
        paper = _kv(it.paper) if it.paper else "(plot only) " + html.escape(it.claim)
        parts.append(f"<tr id='row-{it.key}'><td><a href='#{it.key}'>{html.escape(it.title)}</a></td><td>{paper}</td>"
                     f"<td>{ours}</td><td class='{_cls(it.verdict)}'>{html.escape(it.verdict_line())}</td></tr>")
    parts.append("</tbody></table>")
    parts.append("<h2>Items</h2>")
    shown = set()
    for it in rep.items:
        parts.append(f"<h3 id='{it.key}'>{html.escape(it.title)}</h3><p><i>Paper:</i> {html.escape(it.claim)}</p>"
                     f"<p class='{_cls(it.verdict)}'>{html.escape(it.verdict_line())}</p>")
        if it.checks:
            parts.append("<table><tr><th>check</th><th>ours</th><th>rule</th><th>paper</th><th>passes</th></tr>"
                         + "".join(f"<tr><td>{html.escape(c.name)}</td><td>{html.escape(fmt(c.ours))}</td>"
                                   f"<td>{html.escape(c.describe())}</td><td>{html.escape(fmt(c.paper))}</td>"
                                   f"<td>{'yes' if c.passed else 'no'}</td></tr>" for c in it.checks) + "</table>")
        if it.ours:
            parts.append(f"<p class='note'>Our numbers: {_kv(it.ours)}</p>")
        parts += [f"<p class='note'>{html.escape(n)}</p>" for n in it.notes]
        if it.figure and it.figure in rep.figures and it.figure not in shown:
            shown.add(it.figure)
            parts.append(_img(rep.figures[it.figure], it.figure))
    for name, df in rep.tables.items():
        parts.append(f"<h2>{html.escape(name)}</h2>" + df.to_html(index=False, na_rep="–", float_format=lambda x: f"{x:.3f}"))
    for name, path in rep.figures.items():
        if name not in shown and name != "at_scale.png":
            parts.append(f"<h3>{html.escape(name)}</h3>" + _img(path, name))
    if rep.at_scale is not None:
        a = rep.at_scale
        parts.append("<h2>At scale: N devices sharing a cell</h2>")
        parts.append(f"<p>{html.escape(a.get('description', ''))}</p>")
        parts.append("<p>Top policy by accuracy within the deadline: "
                     + html.escape("; ".join(a["summary"]["top_changes"])) + "</p>")
        parts.append(a["rankings"].to_html(index=False))
        if "at_scale.png" in rep.figures:
            parts.append(_img(rep.figures["at_scale.png"], "at_scale.png"))
        cols = ["devices", "variant", "stable", "accuracy", "deadline_accuracy", "network_mean_s", "network_p95_s",
                "latency_mean_s", "latency_p95_s", "gpu_utilisation", "uplink_utilisation", "served_per_s",
                "offered_per_s", "unstable_why"]
        parts.append(a["table"][[c for c in cols if c in a["table"]]].to_html(
            index=False, na_rep="–", float_format=lambda x: f"{x:.3f}"))
    parts.append("</body></html>")
    return "\n".join(parts)
