"""The VLM backend interface used by trace extraction, its settings, and the backend factory.

A backend wraps one vision-language model and offers:
  load(path, device, dtype)           -> backend (classmethod)
  encode(images, question)            -> Encoded: model inputs for one prompt holding the image(s)
  generate(encoded, max_new_tokens)   -> Generation: greedy tokens, per-step full-vocabulary logits, timings
  attention_to_image(image, question) -> AttentionMaps: question / generic / relative maps, shape visual_grid()
  visual_grid()                       -> (rows, cols) of visual tokens per image
Images given to a backend are already resized to vision_input_px x vision_input_px (extract does that).

A local checkpoint directory holds what from_pretrained needs: config.json (model_type "llava",
"qwen2_5_vl" or "instructblip") with the weights (model.safetensors), a tokenizer saved with save_pretrained (any
PreTrainedTokenizerFast, character-level is fine, as long as the image token, e.g. "<image>", is one
special token) and an image processor config (preprocessor_config.json, or processor_config.json as
written by LlavaProcessor.save_pretrained). Visual token counts and grids come from config.json.

Settings (BackendSettings) start from the per-model defaults of the implementation; an optional
`edgevlm.json` file in a local checkpoint directory overrides them, and CLI flags override both.
Keys of edgevlm.json (all optional; unknown keys are an error):
  model_id          str   id written to trace provenance (default: the path given to --model)
  source_kind       str   provenance source_kind when --source-kind is not given: "real" (published
                          weights), "tiny-local" (a model trained here) or "synthetic"; a local model
                          directory that declares none needs --source-kind (`trace extract` refuses)
  prompt_template   str   prompt with "{images}" and "{question}" (LLaVA default:
                          "USER: {images}\\n{question} ASSISTANT:"); for two images {images} becomes
                          the image placeholder twice, joined by image_joiner
  image_joiner      str   text between image placeholders (default "\\n")
  question_suffix   str   appended to every question, e.g. "\\nAnswer the question using a single
                          word or phrase." for LLaVA-1.5 VQA evaluation (default "")
  generic_prompt    str   the "question" of the generic attention pass
                          (default "Write a general description of the image.")
  attention_layer   int   decoder layer whose attention is used (LLaVA default: 14 of 32, i.e. scaled
                          as round(14/32 * L) for an L-layer model; Qwen2.5-VL likewise)
  vision_input_px   int   square side the images are resized to (LLaVA: must equal the vision
                          tower's image_size; Qwen2.5-VL default 224, a multiple of patch*merge)
  max_new_tokens    int   greedy decode limit (default 16)
  box_pad_px        int   pixels added on every side of the crop box (default 0, as ViCrop)
  box_pad_frac      float fraction of the window side added on every side, on top of box_pad_px
                          (default 0.0); pads "in proportion to the window"
  box_grow          float grow the box over attended cells joined to the window whose attention is
                          >= box_grow x the map's peak (default 0.0: off, as ViCrop); see models.boxsearch
  box_grow_min_cells int  grow only when that region spans at least this many cells (default 1)
  attention_eps     float guard in relative attention: question / (generic + eps) (default 1e-8)
  dtype             str   "float32" | "float16" | "bfloat16" | "auto" (default "auto": the
                          checkpoint's dtype on GPU, float32 on CPU)
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

SOURCE_KINDS = ("real", "tiny-local", "synthetic")   # as traces.schema.SOURCE_KINDS
GENERIC_PROMPT = "Write a general description of the image."
SETTINGS_FILE = "edgevlm.json"


class BackendError(ValueError):
    """A model cannot be loaded or configured; the message names the file/key and the allowed values."""


@dataclass(frozen=True)
class BackendSettings:
    prompt_template: str = "USER: {images}\n{question} ASSISTANT:"
    image_joiner: str = "\n"
    question_suffix: str = ""
    generic_prompt: str = GENERIC_PROMPT
    attention_layer: int | None = None        # None: the implementation's per-model default
    vision_input_px: int | None = None        # None: derived from the model config
    max_new_tokens: int = 16
    box_pad_px: int = 0
    box_pad_frac: float = 0.0
    box_grow: float = 0.0
    box_grow_min_cells: int = 1
    attention_eps: float = 1e-8
    dtype: str = "auto"
    model_id: str | None = None
    source_kind: str | None = None

    def box_kwargs(self) -> dict[str, Any]:
        """The crop-box keyword arguments of models.boxsearch.search_box these settings give."""
        return {"pad_px": self.box_pad_px, "pad_frac": self.box_pad_frac, "grow": self.box_grow,
                "grow_min_cells": self.box_grow_min_cells}

    def merged(self, overrides: dict[str, Any], where: str) -> "BackendSettings":
        """A copy with `overrides` applied; each key and value type is checked."""
        known = {f.name: f for f in fields(self)}
        clean = {}
        for key, value in overrides.items():
            if key not in known:
                raise BackendError(f"{where}: unknown key '{key}'; allowed keys: {', '.join(known)}")
            if value is None:
                continue
            clean[key] = _check_setting(key, value, where)
        return replace(self, **clean)


_INT_KEYS = {"attention_layer": 0, "vision_input_px": 1, "max_new_tokens": 1, "box_pad_px": 0,
             "box_grow_min_cells": 1}
_DTYPES = ("auto", "float32", "float16", "bfloat16")


def _check_setting(key: str, value: Any, where: str) -> Any:
    if key in _INT_KEYS:
        if not isinstance(value, int) or isinstance(value, bool) or value < _INT_KEYS[key]:
            raise BackendError(f"{where}: '{key}' must be an integer >= {_INT_KEYS[key]}, got {value!r}")
        return value
    if key == "box_pad_frac":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 2:
            raise BackendError(f"{where}: 'box_pad_frac' must be a number in [0, 2], got {value!r}")
        return float(value)
    if key == "box_grow":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 1:
            raise BackendError(f"{where}: 'box_grow' must be a number in [0, 1], got {value!r}")
        return float(value)
    if key == "attention_eps":
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise BackendError(f"{where}: 'attention_eps' must be a positive number, got {value!r}")
        return float(value)
    if key == "source_kind":
        if value not in SOURCE_KINDS:
            raise BackendError(f"{where}: 'source_kind' must be one of {', '.join(SOURCE_KINDS)}, got {value!r}")
        return value
    if key == "dtype":
        if value not in _DTYPES:
            raise BackendError(f"{where}: 'dtype' must be one of {', '.join(_DTYPES)}, got {value!r}")
        return value
    if not isinstance(value, str):
        raise BackendError(f"{where}: '{key}' must be a string, got {type(value).__name__}")
    if key == "prompt_template":
        for part in ("{images}", "{question}"):
            if part not in value:
                raise BackendError(f"{where}: 'prompt_template' must contain {part}, got {value!r}")
    return value


def read_settings_file(model_path: str | os.PathLike) -> dict[str, Any]:
    """The overrides in <model_path>/edgevlm.json, or {} when there is none."""
    p = Path(model_path) / SETTINGS_FILE
    if not p.is_file():
        return {}
    try:
        obj = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendError(f"{p}: not readable JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise BackendError(f"{p}: must hold a JSON object of settings")
    return obj


@dataclass
class Encoded:
    """Model inputs for one prompt with its images, plus what extraction needs to know about them."""

    inputs: dict[str, Any]                     # tensors on the model's device
    image_positions: list[np.ndarray]          # per image: sequence positions of its visual tokens
    prompt_tokens: int                         # text tokens (all tokens minus visual tokens)
    n_images: int
    t_vision_s: float = 0.0                    # vision encoder time spent by this encode (0 if cached)
    #: per image, where each visual token looks in the image grid (n_tokens, rows*cols), for models whose
    #: visual tokens are not patches (InstructBLIP's Q-Former queries); None otherwise
    image_maps: list | None = None


@dataclass
class Generation:
    """Greedy decode output. `logits` holds one full-vocabulary row per step in `tokens`."""

    tokens: list[int]
    text: str
    logits: np.ndarray                         # (len(tokens), vocab) float32
    stopped_on_eos: bool
    t_vision_s: float | None = None
    t_prefill_s: float | None = None
    t_decode_token_s: float | None = None


@dataclass
class AttentionMaps:
    """Head-averaged attention of the last prompt position to the image tokens, as (rows, cols) grids."""

    question: np.ndarray
    generic: np.ndarray
    relative: np.ndarray
    layer: int


class VLMBackend(ABC):
    """One loaded VLM. Implementations: models.llava.LlavaBackend, models.qwen.QwenVLBackend,
    models.instructblip.InstructBlipBackend."""

    name: str = "base"
    settings: BackendSettings
    model_id: str

    @classmethod
    @abstractmethod
    def load(cls, path: str, *, device: str = "cpu", settings: BackendSettings | None = None,
             overrides: dict[str, Any] | None = None) -> "VLMBackend":
        """Load weights, tokenizer and image processor from a local directory or hub id."""

    @property
    @abstractmethod
    def vision_input_px(self) -> int: ...

    @property
    @abstractmethod
    def attention_layer(self) -> int: ...

    @abstractmethod
    def visual_grid(self) -> tuple[int, int]:
        """(rows, cols) of visual tokens of one image."""

    @property
    def visual_tokens_per_image(self) -> int:
        rows, cols = self.visual_grid()
        return rows * cols

    @abstractmethod
    def encode(self, images: Sequence[Any], question: str) -> Encoded: ...

    @abstractmethod
    def generate(self, encoded: Encoded, max_new_tokens: int | None = None) -> Generation: ...

    @abstractmethod
    def attention_to_image(self, image: Any, question: str) -> AttentionMaps: ...

    def generate_each(self, encodeds: Sequence[Encoded], max_new_tokens: int | None = None) -> list[Generation]:
        """generate() on each prompt in turn. Extraction asks for a sample's independent answers together
        (stage 2 and the oracle pass) so that a batched extraction can run them in one batch."""
        return [self.generate(e, max_new_tokens) for e in encodeds]

    def generate_batch(self, encodeds: Sequence[Encoded], max_new_tokens: int | None = None) -> list[Generation]:
        """generate() for several prompts; implementations batch them (models.batched uses this)."""
        return [self.generate(e, max_new_tokens) for e in encodeds]

    def attention_batch(self, images: Sequence[Any], questions: Sequence[str]) -> list[AttentionMaps]:
        """attention_to_image() for several (image, question) pairs; implementations batch them."""
        return [self.attention_to_image(i, q) for i, q in zip(images, questions)]

    def prefetch(self, images: Sequence[Any]) -> None:
        """Encode these images' visual features in one pass so later calls find them cached (optional)."""

    def describe(self) -> dict[str, Any]:
        """Backend facts for trace provenance."""
        s = self.settings
        return {"backend": self.name, "attention_layer": self.attention_layer,
                "prompt_template": s.prompt_template, "image_joiner": s.image_joiner,
                "question_suffix": s.question_suffix, "generic_prompt": s.generic_prompt,
                "max_new_tokens": s.max_new_tokens, "attention_eps": s.attention_eps}


BACKENDS = ("auto", "llava", "qwen2_5_vl", "instructblip")


def detect_backend(path: str) -> str:
    """'llava' or 'qwen2_5_vl' from the checkpoint's config.json model_type (local dirs or hub ids)."""
    cfg_path = Path(path) / "config.json"
    if cfg_path.is_file():
        try:
            model_type = json.loads(cfg_path.read_text(encoding="utf-8")).get("model_type")
        except (OSError, ValueError) as exc:
            raise BackendError(f"{cfg_path}: not readable JSON ({exc})") from None
    elif Path(path).exists():
        raise BackendError(f"{path}: no config.json; expected a Hugging Face checkpoint directory")
    else:
        # defers transformers
        from transformers import AutoConfig  # hub id: needs network access or the local HF cache
        try:
            model_type = AutoConfig.from_pretrained(path).model_type
        except (OSError, ValueError) as exc:
            raise BackendError(f"--model {path!r}: not a local directory and not loadable from the "
                               f"Hugging Face hub/cache ({str(exc).splitlines()[0]})") from None
    if model_type == "llava":
        return "llava"
    if model_type in ("qwen2_5_vl", "instructblip"):
        return model_type
    raise BackendError(f"{path}: model_type {model_type!r} is not supported; supported: llava, qwen2_5_vl, "
                       "instructblip")


def load_backend(path: str, *, backend: str = "auto", device: str = "cpu",
                 overrides: dict[str, Any] | None = None) -> VLMBackend:
    """Load the right backend for a checkpoint; `overrides` are CLI settings on top of edgevlm.json."""
    if backend not in BACKENDS:
        raise BackendError(f"--backend {backend!r} must be one of {', '.join(BACKENDS)}")
    kind = detect_backend(path) if backend == "auto" else backend
    if kind == "llava":
        from edgevlm.models.llava import LlavaBackend  # defers torch
        return LlavaBackend.load(path, device=device, overrides=overrides)
    if kind == "instructblip":
        from edgevlm.models.instructblip import InstructBlipBackend  # defers torch, transformers
        return InstructBlipBackend.load(path, device=device, overrides=overrides)
    from edgevlm.models.qwen import QwenVLBackend  # defers torch
    return QwenVLBackend.load(path, device=device, overrides=overrides)
