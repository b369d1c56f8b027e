"""Dataset adapters: the seed's benchmarks, read from their published annotation files, as manifests.

DATASETS maps the name given to `edgevlm trace manifest` to its adapter; `build_manifest` writes the
manifest atomically after checking every record and every image (nothing is written on an error).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgevlm.models.datasets.aokvqa import AOKVQA, AOKVQAMultipleChoice
from edgevlm.models.datasets.base import AnnotationError, DatasetAdapter, Source
from edgevlm.models.datasets.docvqa import DocVQA
from edgevlm.models.datasets.gqa import GQA
from edgevlm.models.datasets.pope import POPE
from edgevlm.models.datasets.textvqa import TextVQA, TextVQAOCR
from edgevlm.models.datasets.vqav2 import VQAv2

DATASETS: dict[str, DatasetAdapter] = {a.name: a for a in (
    TextVQA(), TextVQAOCR(), POPE(), GQA(), VQAv2(), AOKVQA(), AOKVQAMultipleChoice(), DocVQA())}

__all__ = ["DATASETS", "AnnotationError", "DatasetAdapter", "Source", "build_records", "build_manifest"]


def get_adapter(name: str) -> DatasetAdapter:
    if name not in DATASETS:
        raise AnnotationError(f"dataset {name!r} is not known; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def build_records(name: str, source: Source, limit: int | None = None, check_images: bool = True) -> list[dict[str, Any]]:
    """The first `limit` manifest records of a dataset, each image checked to exist."""
    adapter = get_adapter(name)
    for need in adapter.needs:
        if getattr(source, need) is None:
            raise AnnotationError(f"dataset {name!r} needs --{need} FILE")
    if limit is not None and limit < 1:
        raise AnnotationError(f"--limit must be a positive integer, got {limit}")
    if not source.images.is_dir():
        raise AnnotationError(f"--images {source.images}: not a folder")
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for rec in adapter.records(source):
        if rec["sample_id"] in seen:
            raise AnnotationError(f"{source.annotations}: sample id {rec['sample_id']!r} occurs twice")
        seen.add(rec["sample_id"])
        if check_images and not Path(rec["image"]).is_file():
            raise AnnotationError(f"{source.annotations}: record {rec['sample_id']}: image {rec['image']} not found "
                                  f"(check --images{' and --split' if adapter.default_split else ''})")
        out.append({k: v for k, v in rec.items() if v is not None})
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise AnnotationError(f"{source.annotations}: no questions{f' in split {source.split!r}' if source.split else ''}")
    return out


def build_manifest(name: str, source: Source, out: str | os.PathLike, limit: int | None = None) -> int:
    """Write the dataset's manifest (JSON lines, image paths absolute) to `out`; returns the line count."""
    from edgevlm.traces.io import atomic_write

    source = Source(**{k: (Path(v).resolve() if isinstance(v, Path) else v) for k, v in source.__dict__.items()})
    records = build_records(name, source, limit)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    atomic_write(out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return len(records)
