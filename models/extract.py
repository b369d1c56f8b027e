"""Trace extraction: run a VLM over a dataset manifest and write a trace format v1 file.

Per sample (DESIGN.md §2, §4):
  1. the original image is resized (aspect ignored) to the vision input square: the *global* image;
  2. stage 1 answers on the global image by greedy decoding; per-token min-entropy, Shannon entropy
     and margin come from the same logits (models.uncertainty);
  3. relative attention (question vs generic prompt, one layer, head-averaged) drives the ViCrop box
     search (models.boxsearch); the box is in original pixels;
  4. the *local* image is that box cut from the FULL-RESOLUTION original, resized to the vision input;
  5. stage 2 answers with the global and local images as two images in one prompt;
  6. with a manifest gt_box, stage 2 is run again on an oracle crop (the gt box grown to the smallest
     search window, models.boxsearch.box_around) -> s2_oracle_score;
  7. JPEG sizes (models.jpeg) of global, local and original at each quality; stage-1 timings;
  With --infer-jpeg-quality Q the model sees the global and local images as the server decodes them
  (JPEG round trip at Q, as the edge sends them), so stage-1 decisions match a deployed server's;
  byte sizes always come from the uncompressed images.
  8. with a fitted codec (--progressive): the global image's visual tokens are encoded into levels,
     and the LLM answers from the tokens decoded at each level -> prog_bytes, prog_score,
     prog_min_entropy (models.progressive); the edge cost goes in the metadata.
Generated-token lists exclude the final EOS, except when EOS is the only token (an empty answer):
that step is kept so each row has >= 1 token. Rows are checkpointed atomically every
`checkpoint_every` samples; rerunning with the same --out skips samples already there.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
from PIL import Image
from tqdm.auto import tqdm

from edgevlm.models.backend import VLMBackend
from edgevlm.models.batched import process_batch
from edgevlm.models.boxsearch import DEFAULT_RATIOS, box_around, search_box
from edgevlm.models.jpeg import DEFAULT_QUALITIES, JPEG_SETTINGS, jpeg_round_trip, jpeg_sizes, to_rgb
from edgevlm.models.manifest import Sample
from edgevlm.models.progressive import edge_metadata, progressive_row, vision_tokens
from edgevlm.models.scoring import SCORING_MODES, score_answer
from edgevlm.models.uncertainty import token_uncertainty
from edgevlm.traces.io import TraceError, read_trace, write_trace
from edgevlm.traces.schema import FIELD_BY_NAME, PROG_COLUMNS, SOURCE_KINDS
from edgevlm.traces.version import generator_string, git_commit

RESAMPLE = Image.Resampling.BICUBIC
#: Provenance keys that must match for a resumed run to append to an existing trace.
RESUME_KEYS = ("model_id", "dataset_id", "source_kind", "jpeg_qualities", "vision_input_px",
               "visual_tokens_per_image", "attention_layer", "box_pad_px", "box_pad_frac", "box_ratios", "box_grow", "box_grow_min_cells", "infer_jpeg_quality",
               "prompt_template",
               "question_suffix", "generic_prompt", "max_new_tokens", "scoring", "backend", "progressive")
COLUMNS = ("sample_id", "question_type", "image_w", "image_h", "global_jpeg_bytes", "original_jpeg_bytes",
           "local_jpeg_bytes", "prompt_tokens", "s1_answer", "s1_score", "s1_min_entropy", "s1_shannon",
           "s1_margin", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "s2_answer", "s2_score", "s2_tokens",
           "s2_oracle_score", "gt_x0", "gt_y0", "gt_x1", "gt_y1", "t_vision_s", "t_prefill_s",
           "t_decode_token_s")
ROW_SCHEMA = pa.schema([FIELD_BY_NAME[c] for c in COLUMNS])
PROG_ROW_SCHEMA = pa.schema([FIELD_BY_NAME[c] for c in COLUMNS + PROG_COLUMNS])


class ExtractError(ValueError):
    """Extraction cannot start or continue; the message names the option, file or manifest line."""


@dataclass
class ExtractOptions:
    dataset_id: str
    source_kind: str = "real"
    jpeg_qualities: Sequence[int] = DEFAULT_QUALITIES
    box_ratios: Sequence[float] = DEFAULT_RATIOS
    scoring: str = "auto"
    limit: int | None = None
    checkpoint_every: int = 25
    overwrite: bool = False
    progress: bool = True
    notes: str = ""
    extra_provenance: dict[str, Any] = field(default_factory=dict)
    codec: Any = None                     # a fitted models.codec.Codec: fill the prog_* columns
    codec_path: str | None = None
    #: run the model on what the server decodes: global and local images JPEG round-tripped at this
    #: quality, as the edge sends them (None: the uncompressed resized images)
    infer_jpeg_quality: int | None = None
    #: samples extracted together (models.batched); 1: one at a time
    batch_size: int = 1

    @property
    def columns(self) -> tuple[str, ...]:
        return COLUMNS + PROG_COLUMNS if self.codec is not None else COLUMNS

    def check(self) -> None:
        if self.source_kind not in SOURCE_KINDS:
            raise ExtractError(f"--source-kind {self.source_kind!r} must be one of {', '.join(SOURCE_KINDS)}")
        q = list(self.jpeg_qualities)
        if not q or sorted(set(q)) != q or not all(isinstance(v, int) and 1 <= v <= 100 for v in q):
            raise ExtractError(f"--jpeg-qualities {q} must be increasing distinct integers in 1..100")
        if self.scoring not in SCORING_MODES:
            raise ExtractError(f"--scoring {self.scoring!r} must be one of {', '.join(SCORING_MODES)}")
        if self.limit is not None and self.limit < 1:
            raise ExtractError(f"--limit must be a positive integer, got {self.limit}")
        if self.checkpoint_every < 1:
            raise ExtractError(f"--checkpoint-every must be a positive integer, got {self.checkpoint_every}")
        if not self.box_ratios or any(r <= 0 for r in self.box_ratios):
            raise ExtractError("box ratios must be positive numbers")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ExtractError(f"--batch-size must be a positive integer, got {self.batch_size!r}")
        if self.batch_size > 1 and self.codec is not None:
            raise ExtractError("--batch-size > 1 does not combine with --progressive; use --batch-size 1")
        iq = self.infer_jpeg_quality
        if iq is not None and (not isinstance(iq, int) or isinstance(iq, bool) or not 1 <= iq <= 100):
            raise ExtractError(f"--infer-jpeg-quality must be an integer in 1..100, got {iq!r}")


def load_image(sample: Sample) -> Image.Image:
    """The sample's original image as RGB, pixels as stored (EXIF orientation is not applied)."""
    try:
        with Image.open(sample.image_path) as im:
            im.load()
            return to_rgb(im)
    except FileNotFoundError:
        raise ExtractError(f"manifest line {sample.line}: field 'image': file {sample.image_path} not found") from None
    except (OSError, Image.DecompressionBombError) as exc:
        raise ExtractError(f"manifest line {sample.line}: field 'image': cannot read {sample.image_path} "
                           f"({exc})") from None


def _f32(values: Iterable[float]) -> list[float]:
    return [float(v) for v in np.asarray(list(values), dtype=np.float32)]


def process_sample(backend: VLMBackend, sample: Sample, opts: ExtractOptions) -> dict[str, Any]:
    """One trace row for one manifest sample."""
    original = load_image(sample)
    w, h = original.size
    if sample.gt_box is not None and (sample.gt_box[2] > w or sample.gt_box[3] > h):
        raise ExtractError(f"manifest line {sample.line}: field 'gt_box' {list(sample.gt_box)} lies outside "
                           f"the {w}x{h} image")
    px = backend.vision_input_px
    st = backend.settings
    global_img = original.resize((px, px), RESAMPLE)
    sent = partial(jpeg_round_trip, quality=opts.infer_jpeg_quality)   # what the server decodes
    global_seen = sent(global_img)

    tokens = None
    if opts.codec is not None:  # the projector-input tokens the edge would compress (edge side: no JPEG)

        tokens = vision_tokens(backend, [global_img])[0]
    enc1 = backend.encode([global_seen], sample.text)
    gen1 = backend.generate(enc1)
    min_ent, shannon, margin = token_uncertainty(gen1.logits)

    maps = backend.attention_to_image(global_seen, sample.text)
    box = search_box(maps.relative, w, h, px, ratios=opts.box_ratios, **st.box_kwargs())
    local_img = original.crop(box.as_tuple()).resize((px, px), RESAMPLE)
    encs = [backend.encode([global_seen, sent(local_img)], sample.text)]
    if sample.gt_box is not None:   # the oracle crop: the gt box grown to the smallest search window
        obox = box_around(sample.gt_box, w, h, px, pad_px=st.box_pad_px, pad_frac=st.box_pad_frac)
        oracle_img = original.crop(obox.as_tuple()).resize((px, px), RESAMPLE)
        encs.append(backend.encode([global_seen, sent(oracle_img)], sample.text))
    gen2, *gen3 = backend.generate_each(encs)   # independent answers: a batched run batches them

    row: dict[str, Any] = {
        "sample_id": sample.sample_id, "question_type": sample.question_type,
        "image_w": w, "image_h": h,
        "global_jpeg_bytes": jpeg_sizes(global_img, opts.jpeg_qualities),
        "original_jpeg_bytes": jpeg_sizes(original, opts.jpeg_qualities),
        "local_jpeg_bytes": jpeg_sizes(local_img, opts.jpeg_qualities),
        "prompt_tokens": enc1.prompt_tokens,
        "s1_answer": gen1.text, "s1_score": score_answer(gen1.text, sample.answers, opts.scoring, sample.scoring),
        "s1_min_entropy": _f32(min_ent), "s1_shannon": _f32(shannon), "s1_margin": _f32(margin),
        "bbox_x0": box.x0, "bbox_y0": box.y0, "bbox_x1": box.x1, "bbox_y1": box.y1,
        "s2_answer": gen2.text, "s2_score": score_answer(gen2.text, sample.answers, opts.scoring, sample.scoring),
        "s2_tokens": len(gen2.tokens),
        "s2_oracle_score": None, "gt_x0": None, "gt_y0": None, "gt_x1": None, "gt_y1": None,
        "t_vision_s": gen1.t_vision_s, "t_prefill_s": gen1.t_prefill_s,
        "t_decode_token_s": gen1.t_decode_token_s,
    }
    if opts.codec is not None:
        row.update(progressive_row(backend, opts.codec, global_img, sample.text, sample.answers,
                                   opts.scoring, tokens=tokens))
    if sample.gt_box is not None:
        x0, y0, x1, y1 = sample.gt_box
        row.update({"s2_oracle_score": score_answer(gen3[0].text, sample.answers, opts.scoring, sample.scoring),
                    "gt_x0": int(np.floor(x0)), "gt_y0": int(np.floor(y0)),
                    "gt_x1": int(np.ceil(x1)), "gt_y1": int(np.ceil(y1))})
    return row


def hardware_string(backend: VLMBackend) -> str:
    dev = getattr(backend, "device", None)
    if dev is not None and getattr(dev, "type", "") == "cuda":
        import torch  # defers torch
        return f"{torch.cuda.get_device_name(dev)} (cuda)"
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} logical cores"


def provenance(backend: VLMBackend, opts: ExtractOptions, manifest: Path) -> dict[str, Any]:
    import torch  # defers torch
    import transformers  # defers transformers

    prov = {
        "source_kind": opts.source_kind,
        "model_id": backend.model_id,
        "dataset_id": opts.dataset_id,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "generator": generator_string("models.extract"),
        "commit": git_commit(),
        "vision_input_px": int(backend.vision_input_px),
        "visual_tokens_per_image": int(backend.visual_tokens_per_image),
        "visual_grid": list(backend.visual_grid()),
        "jpeg_qualities": [int(q) for q in opts.jpeg_qualities],
        "jpeg_settings": JPEG_SETTINGS,
        "box_ratios": [float(r) for r in opts.box_ratios],
        "box_pad_px": int(backend.settings.box_pad_px),
        "box_pad_frac": float(backend.settings.box_pad_frac),
        "box_grow": float(backend.settings.box_grow),
        "box_grow_min_cells": int(backend.settings.box_grow_min_cells),
        "infer_jpeg_quality": opts.infer_jpeg_quality,
        "scoring": opts.scoring,
        "batch_size": int(opts.batch_size),
        "manifest": str(manifest),
        "hardware": hardware_string(backend),
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "notes": opts.notes,
    }
    prov.update(backend.describe())
    if opts.codec is not None:
        prov.update(edge_metadata(backend, opts.codec))
        prov["progressive"]["path"] = opts.codec_path
    prov.update(opts.extra_provenance)
    return prov


def _existing_rows(out: Path, prov: dict[str, Any], overwrite: bool,
                   columns: Sequence[str] = COLUMNS) -> list[dict[str, Any]]:
    if overwrite or not out.exists():
        return []
    try:
        table, old = read_trace(out)
    except TraceError as exc:
        raise ExtractError(f"--out {out}: exists but is not a valid trace to resume ({exc}); "
                           "pass --overwrite to replace it") from None
    for key in RESUME_KEYS:
        if old.get(key) != prov.get(key):
            raise ExtractError(f"--out {out}: exists with {key}={old.get(key)!r}, this run has {prov.get(key)!r}; "
                               "resume needs identical settings (use another --out, or --overwrite)")
    cols = [c for c in columns if c in table.column_names]
    rows = table.select(cols).to_pylist()
    for r in rows:
        for c in columns:
            r.setdefault(c, None)
    return rows


def _write(rows: list[dict[str, Any]], out: Path, prov: dict[str, Any]) -> None:
    schema = PROG_ROW_SCHEMA if "progressive" in prov else ROW_SCHEMA
    table = pa.Table.from_pylist(rows, schema=schema)
    write_trace(table, out, {**prov, "n_samples": len(rows)})


def extract(backend: VLMBackend, samples: Sequence[Sample], out: str | os.PathLike, opts: ExtractOptions,
            manifest: str | os.PathLike = "") -> dict[str, Any]:
    """Extract a trace for `samples` into `out` (resuming if it exists); returns a small run summary."""

    opts.check()
    if backend.settings.question_suffix and any(s.prompt is not None for s in samples):
        raise ExtractError("the manifest's lines carry their own prompt (field 'prompt', answer instruction "
                           "included); drop --question-suffix / question_suffix in edgevlm.json")
    out = Path(out)
    prov = provenance(backend, opts, Path(manifest))
    rows = _existing_rows(out, prov, opts.overwrite, opts.columns)
    done = {r["sample_id"] for r in rows}
    selected = list(samples)[: opts.limit] if opts.limit is not None else list(samples)
    todo = [s for s in selected if s.sample_id not in done]
    skipped = len(selected) - len(todo)
    for s in todo:
        if not s.image_path.is_file():
            raise ExtractError(f"manifest line {s.line}: field 'image': file {s.image_path} not found")
    new = 0
    t0 = time.perf_counter()
    bar = tqdm(total=len(todo), desc="extract", unit="sample", disable=not opts.progress, dynamic_ncols=True)
    try:
        for k in range(0, len(todo), opts.batch_size):
            try:
                done_rows, error = process_batch(backend, todo[k:k + opts.batch_size], opts, process_sample)
            finally:
                clear = getattr(backend, "clear_cache", None)
                if clear is not None:
                    clear()
            for row in done_rows:
                rows.append(row)
                new += 1
                bar.update(1)
                if new % opts.checkpoint_every == 0:
                    _write(rows, out, prov)
            if error is not None:
                raise error
    finally:
        bar.close()
        if new and new % opts.checkpoint_every:
            _write(rows, out, prov)
    if not rows:
        raise ExtractError("no samples were extracted (empty selection)")
    if not new and not out.exists():
        _write(rows, out, prov)
    elapsed = time.perf_counter() - t0
    return {"out": str(out), "new_rows": new, "skipped_existing": skipped, "total_rows": len(rows),
            "elapsed_s": elapsed, "samples_per_s": new / elapsed if new and elapsed > 0 else None,
            "mean_s1_score": float(np.mean([r["s1_score"] for r in rows])),
            "mean_s2_score": float(np.mean([r["s2_score"] for r in rows]))}
