"""`edgevlm trace extract`: run a VLM over a dataset manifest and write a v1 trace.

register(subparsers) adds the `extract` sub-command to the `trace` sub-parsers of sim/cli.py; the
handler imports torch/transformers only when it runs, so `--help` stays fast. Standalone:
    python -m edgevlm.models.cli extract --model DIR --dataset manifest.jsonl --out traces/x.parquet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

EXIT_USAGE = 2

_DESCRIPTION = """\
Run a vision-language model (HF LLaVA-1.5 or Qwen2.5-VL; a local checkpoint directory or a hub id
already in the local HF cache) over a JSONL dataset manifest and write a trace (format v1): stage-1
answer with per-token min-entropy/Shannon/margin, a ViCrop relative-attention crop box, the stage-2
answer on global + local images, JPEG sizes and timings.

Manifest lines: {"image": "img/1.jpg", "question": "...", "answers": ["..", ...],
                 "question_type": "text", "gt_box": [x0, y0, x1, y1], "sample_id": "..."}
(question_type, gt_box and sample_id are optional; image paths are relative to the manifest).

With --progressive (LLaVA only) a fitted visual-token codec (see `fit-codec`; default
<model>/codec/pca_levels) encodes each global image's vision-encoder tokens into levels, and the LLM
answers from the tokens decoded at every level: the prog_bytes / prog_score / prog_min_entropy
columns, with the edge's vision-encoder FLOPs in the trace metadata.

The output is written atomically and checkpointed; rerunning with the same --out resumes, skipping
samples already in it. Settings in <model>/edgevlm.json override the per-model defaults; the
options below override both."""

_FIT_DESCRIPTION = """\
Fit a progressive visual-token codec on the vision-encoder output (before the projector) of a LLaVA
checkpoint over a calibration manifest, and save it (codec.json + codec.npz), by default beside the
weights in <model>/codec/<kind>. Use calibration images that are NOT in the evaluation manifest.

Kinds: pca_levels (default; principal axes split by variance into levels, int8 + zlib per level)
and nested_ae (a small autoencoder trained with nested dropout, same level/byte interface)."""


def _qualities(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not vals:
        raise argparse.ArgumentTypeError("give at least one quality")
    return vals


def _ratios(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def declared_source_kind(model: str, declared: str | None) -> str:
    """The source_kind a model declares; a local directory must declare one (edgevlm.json) or the
    user must say it, so a model trained here is never labelled `real` by default."""
    from edgevlm.models.extract import ExtractError

    if declared is not None:
        return declared
    if Path(model).is_dir():
        raise ExtractError(f"--source-kind is required: {Path(model) / 'edgevlm.json'} declares no source_kind "
                           "(tiny-local for a model trained here, real for published weights, synthetic)")
    return "real"


def add_extract_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint directory (or HF hub id in the local cache)")
    p.add_argument("--dataset", required=True, metavar="MANIFEST", help="JSONL dataset manifest")
    p.add_argument("--out", required=True, help="trace file to write (.parquet); resumed if it exists")
    p.add_argument("--backend", default="auto", choices=("auto", "llava", "qwen2_5_vl", "instructblip"),
                   help="model family (default: from config.json model_type)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, ... (default: cpu)")
    p.add_argument("--limit", type=int, help="use only the first N samples of the manifest")
    p.add_argument("--dataset-id", help="dataset name for provenance (default: the manifest's file stem)")
    p.add_argument("--model-id", help="model name for provenance (default: edgevlm.json model_id or --model)")
    p.add_argument("--source-kind", choices=("real", "tiny-local", "synthetic"),
                   help="provenance source_kind: real (published weights), tiny-local (a model trained here) "
                        "or synthetic; default: the model directory's edgevlm.json source_kind (required "
                        "when it declares none); a hub id without a directory is real")
    p.add_argument("--jpeg-qualities", type=_qualities, default=[10, 25, 50, 75, 95],
                   help="comma-separated JPEG qualities (default: 10,25,50,75,95)")
    p.add_argument("--scoring", default="auto", choices=("auto", "vqa", "exact"),
                   help="auto: exact match for 1 reference answer, VQA accuracy otherwise (default)")
    p.add_argument("--attention-layer", type=int, help="decoder layer for relative attention "
                   "(default: 14 of 32 for LLaVA-1.5-7B, same depth ratio otherwise)")
    p.add_argument("--box-pad-px", type=int, help="pixels added on every side of the crop box (default 0)")
    p.add_argument("--box-pad-frac", type=float, help="fraction of the window side added on every side of "
                   "the crop box, on top of --box-pad-px (default 0)")
    p.add_argument("--box-grow", type=float, help="grow the box over attended cells joined to the window with "
                   "attention >= this fraction of the peak (default 0: off, as ViCrop)")
    p.add_argument("--box-grow-min-cells", type=int, help="grow only when that region spans at least this many "
                   "attention cells (default 1)")
    p.add_argument("--infer-jpeg-quality", type=int, help="run the model on the global and local images after a "
                   "JPEG round trip at this quality, as a server receives them (default: uncompressed)")
    p.add_argument("--box-ratios", type=_ratios, default=[1.0, 1.2, 1.4, 1.6, 1.8, 2.0],
                   help="window sides as multiples of the vision input (default: 1.0,1.2,...,2.0)")
    p.add_argument("--max-new-tokens", type=int, help="greedy decode limit per answer (default 16)")
    p.add_argument("--vision-input-px", type=int, help="square input side (Qwen2.5-VL default 224; "
                   "LLaVA: the vision tower's image_size)")
    p.add_argument("--prompt-template", help='prompt with {images} and {question}, e.g. '
                   '"USER: {images}\\n{question} ASSISTANT:"')
    p.add_argument("--question-suffix", help='text appended to each question, e.g. '
                   '"\\nAnswer the question using a single word or phrase."')
    p.add_argument("--generic-prompt", help='generic attention prompt (default: "Write a general '
                   'description of the image.")')
    p.add_argument("--dtype", choices=("auto", "float32", "float16", "bfloat16"),
                   help="weights dtype (default auto: checkpoint dtype on GPU, float32 on CPU)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice; 1 is often "
                   "fastest for small models on a shared machine)")
    p.add_argument("--batch-size", type=int, default=1, help="samples extracted together: stage 1, attention "
                   "passes and stage 2 batched (default 1; results equal to one at a time, timings are the batch's)")
    p.add_argument("--checkpoint-every", type=int, default=25, help="rewrite the output every N samples (default 25)")
    p.add_argument("--notes", default="", help="free text stored in provenance")
    p.add_argument("--overwrite", action="store_true", help="replace --out instead of resuming it")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--progressive", action="store_true", help="also fill prog_bytes/prog_score/prog_min_entropy "
                   "with a fitted visual-token codec (LLaVA only; one extra answer per level and sample)")
    p.add_argument("--codec", help="fitted codec directory for --progressive (default: <model>/codec/pca_levels)")


def _sizes(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def add_fit_codec_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="LLaVA checkpoint directory")
    p.add_argument("--dataset", required=True, metavar="MANIFEST", help="JSONL calibration manifest")
    p.add_argument("--kind", default="pca_levels", choices=("pca_levels", "nested_ae"), help="codec (default pca_levels)")
    p.add_argument("--levels", type=int, default=4, help="number of levels L with doubling group sizes (default 4)")
    p.add_argument("--group-sizes", type=_sizes, help="explicit components per level, e.g. 16,16,32,64 "
                   "(overrides --levels)")
    p.add_argument("--latent", type=int, help="nested_ae latent width (default d_vision)")
    p.add_argument("--hidden", type=int, help="nested_ae MLP width (default min(512, 2 d_vision))")
    p.add_argument("--steps", type=int, default=600, help="nested_ae training steps (default 600)")
    p.add_argument("--seed", type=int, default=0, help="nested_ae seed (default 0)")
    p.add_argument("--limit", type=int, help="use only the first N calibration images")
    p.add_argument("--out", help="codec directory (default: <model>/codec/<kind>)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")


_MANIFEST_DESCRIPTION = """\
Write a JSONL dataset manifest for `trace extract` from a benchmark's own annotation files, as
distributed: questions, human answers, question types where the benchmark has them, its official
scoring rule per line, and the prompt its standard (LLaVA-1.5) evaluation uses. Every record and
every image is checked before anything is written.

datasets:
{datasets}"""


def add_manifest_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", metavar="DATASET", help="benchmark name (see the list above)")
    p.add_argument("--annotations", required=True, metavar="FILE", help="the benchmark's annotation/question file")
    p.add_argument("--images", required=True, metavar="DIR", help="folder holding the benchmark's images")
    p.add_argument("--out", required=True, metavar="M.jsonl", help="manifest to write (atomically)")
    p.add_argument("--split", help="split/setting where the layout depends on it (vqav2: val2014; aokvqa: val; "
                   "pope: random|popular|adversarial; textvqa: keep only this set_name)")
    p.add_argument("--limit", type=int, help="keep only the first N questions")
    p.add_argument("--questions", metavar="FILE", help="vqav2: the v2_OpenEnded_mscoco_<split>_questions.json file")
    p.add_argument("--ocr", metavar="FILE", help="textvqa_ocr: the TextVQA_Rosetta_OCR_v0.2_<split>.json file")


def run_manifest(args: argparse.Namespace) -> int:
    """Handler of `manifest`: bad annotation files print one line naming file, record and field; exit 2."""
    from pathlib import Path

    from edgevlm.models.datasets import AnnotationError, Source, build_manifest

    opt = lambda v: Path(v) if v else None  # noqa: E731
    try:
        n = build_manifest(args.dataset, Source(Path(args.annotations), Path(args.images), args.split,
                                                opt(args.questions), opt(args.ocr)), args.out, args.limit)
    except AnnotationError as exc:
        print(f"edgevlm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {args.out}: {n} {args.dataset} samples")
    return 0


def register(subparsers) -> argparse.ArgumentParser:
    """Add `extract`, `fit-codec` and `manifest` to the given (trace) sub-parsers object."""
    p = subparsers.add_parser("extract", help="extract a trace from a real VLM over a dataset manifest",
                              description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_extract_arguments(p)
    p.set_defaults(func=run_extract)
    f = subparsers.add_parser("fit-codec", help="fit a progressive visual-token codec on a LLaVA's vision tokens",
                              description=_FIT_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_fit_codec_arguments(f)
    f.set_defaults(func=run_fit_codec)
    from edgevlm.models.datasets import DATASETS   # light: json/pathlib only

    m = subparsers.add_parser("manifest", help="write a dataset manifest from a benchmark's annotation files",
                              description=_MANIFEST_DESCRIPTION.format(datasets="\n".join(
                                  f"  {a.name:<12} {a.summary}" for a in DATASETS.values())),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_manifest_arguments(m)
    m.set_defaults(func=run_manifest)
    return p


def run_fit_codec(args: argparse.Namespace) -> int:
    """Handler of `fit-codec`: calibration tokens from the manifest's images, fit, save."""
    from pathlib import Path

    from edgevlm.models.backend import BackendError
    from edgevlm.models.manifest import ManifestError, read_manifest

    try:
        from edgevlm.models.codec import CodecError
        from edgevlm.models.fit_codec import fit_codec_on_manifest
    except ImportError as exc:
        print(f"edgevlm: error: fit-codec needs the [models] extra ({exc})", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise CodecError(f"--threads must be a positive integer, got {args.threads}")
            import torch
            torch.set_num_threads(args.threads)
        samples = read_manifest(args.dataset)
        config = {"n_levels": args.levels, "group_sizes": args.group_sizes}
        if args.kind == "nested_ae":
            config.update(latent=args.latent, hidden=args.hidden, steps=args.steps, seed=args.seed)
        elif any(v is not None for v in (args.latent, args.hidden)):
            raise CodecError("--latent and --hidden apply to --kind nested_ae only")
        out = Path(args.out) if args.out else Path(args.model) / "codec" / args.kind
        codec = fit_codec_on_manifest(args.model, samples, args.kind, config, out, device=args.device,
                                      limit=args.limit, manifest=args.dataset)
    except (ManifestError, BackendError, CodecError) as exc:
        print(f"edgevlm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {out}: {codec.kind}, {codec.n_levels} levels, group sizes {codec.group_sizes}, "
          f"fitted on {codec.fit_info.get('n_calibration_tokens')} tokens")
    return 0


def _unescape(text: str | None) -> str | None:
    """Let shell users write \\n in prompt options."""
    return None if text is None else text.replace("\\n", "\n")


def run_extract(args: argparse.Namespace) -> int:
    """Handler of `extract`: lazy heavy imports; bad input prints one line and returns 2."""
    from pathlib import Path

    from edgevlm.models.backend import BackendError
    from edgevlm.models.manifest import ManifestError, read_manifest
    from edgevlm.traces.io import TraceError

    try:
        from edgevlm.models.extract import ExtractError, ExtractOptions, extract
    except ImportError as exc:  # torch/transformers/pillow missing
        print(f"edgevlm: error: trace extract needs the [models] extra ({exc})", file=sys.stderr)
        return EXIT_USAGE
    try:
        samples = read_manifest(args.dataset)
        overrides = {
            "attention_layer": args.attention_layer, "box_pad_px": args.box_pad_px,
            "box_pad_frac": args.box_pad_frac, "box_grow": args.box_grow,
            "box_grow_min_cells": args.box_grow_min_cells,
            "max_new_tokens": args.max_new_tokens, "vision_input_px": args.vision_input_px,
            "prompt_template": _unescape(args.prompt_template), "question_suffix": _unescape(args.question_suffix),
            "generic_prompt": args.generic_prompt, "dtype": args.dtype, "model_id": args.model_id,
        }
        opts = ExtractOptions(
            dataset_id=args.dataset_id or Path(args.dataset).stem, source_kind=args.source_kind or "real",
            jpeg_qualities=args.jpeg_qualities, box_ratios=args.box_ratios, scoring=args.scoring,
            limit=args.limit, checkpoint_every=args.checkpoint_every, overwrite=args.overwrite,
            progress=not args.no_progress, notes=args.notes, infer_jpeg_quality=args.infer_jpeg_quality,
            batch_size=args.batch_size)
        opts.check()
        from edgevlm.models.backend import load_backend
        import torch

        torch.set_flush_denormal(True)
        if args.threads is not None:
            if args.threads < 1:
                raise ExtractError(f"--threads must be a positive integer, got {args.threads}")
            torch.set_num_threads(args.threads)
        backend = load_backend(args.model, backend=args.backend, device=args.device,
                               overrides={k: v for k, v in overrides.items() if v is not None})
        if args.source_kind is None:
            opts.source_kind = declared_source_kind(args.model, backend.settings.source_kind)
        if args.codec and not args.progressive:
            raise ExtractError("--codec is used only with --progressive")
        if args.progressive:
            from edgevlm.models.codec import CodecError, load_codec
            from edgevlm.models.progressive import projector

            projector(backend)                     # LLaVA only: fails early with a clear message
            codec_dir = args.codec or str(Path(args.model) / "codec" / "pca_levels")
            try:
                opts.codec = load_codec(codec_dir)
            except CodecError as exc:
                raise ExtractError(str(exc)) from None
            opts.codec_path = codec_dir
        summary = extract(backend, samples, args.out, opts, manifest=args.dataset)
    except (ManifestError, BackendError, ExtractError, TraceError) as exc:
        print(f"edgevlm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    rate = summary["samples_per_s"]
    print(f"wrote {summary['out']}: {summary['total_rows']} rows ({summary['new_rows']} new"
          + (f" at {rate:.2f} samples/s" if rate else "") + f", {summary['skipped_existing']} already there); "
          f"mean score stage 1 {summary['mean_s1_score']:.3f}, stage 2 {summary['mean_s2_score']:.3f}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgevlm.models.cli", description="edgevlm model tools")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    register(sub)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("edgevlm: interrupted (rows done so far are saved; rerun to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
