"""Add `edge_score` = `s1_score` to a tiny-model trace: the edge runs the same tiny model on its own global view.

This is the tiny model's full-edge convention (models/tiny/default_trace.py): one single-pass answer on
the 64-px global image, so the full-edge score is the stage-1 score. Recorded in provenance `edge_model`.

    python -m edgevlm.models.add_edge_score TRACE
"""

from __future__ import annotations

import sys

import pyarrow as pa

from edgevlm.traces.io import read_trace, write_trace


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m edgevlm.models.add_edge_score TRACE", file=sys.stderr)
        return 2
    table, prov = read_trace(args[0])
    if "edge_score" in table.column_names:
        table = table.drop(["edge_score"])
    table = table.append_column("edge_score", table.column("s1_score").cast(pa.float32()))
    prov["edge_model"] = ("the same tiny model on the edge, single pass on the global view: "
                          "edge_score = s1_score")
    write_trace(table, args[0], prov)
    print(f"{args[0]}: edge_score = s1_score on {table.num_rows} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
