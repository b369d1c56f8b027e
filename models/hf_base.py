"""Shared Hugging Face machinery for the LLaVA and Qwen2.5-VL backends.

Prompts are built here, not by the HF processors: each image placeholder is expanded to the visual
token count derived from the model config, so the backends need only a tokenizer and an image
processor (the Qwen2.5-VL processor needs torchvision for video, which CPU installs often lack).

Visual features are computed once per image object and reused: encode() runs the vision encoder
and projector for images it has not seen (a small FIFO cache keyed by the image object, holding a
reference so the key stays valid) and hands the features to the model as `mm_encoder_outputs`. The
stage-1 global image is thus encoded once for stage 1, both attention passes, stage 2 and the oracle
pass; the numbers are the same as with pixel inputs (tested), only the repeated work goes.
Batched calls (models.batched) go further where `share_prefix` is on (LLaVA): the key/value states of
each prompt's tokens up to the end of the global image are computed once per image and every later
pass of that sample runs only the rest of its prompt on top of them (`collate_after_prefix`).

Timings: t_vision_s is the vision encoder + projector time of the encode() that first saw the image
(0 when cached); t_prefill_s runs from the start of generate to the first token's logits;
t_decode_token_s is the mean time between later tokens. On CUDA the clock synchronises the device.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from edgevlm.models.backend import (
    AttentionMaps,
    BackendError,
    BackendSettings,
    Encoded,
    Generation,
    VLMBackend,
    read_settings_file,
)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def float32_logits(model) -> bool:
    """With float16/bfloat16 weights, compute the LM head in float32 (a float32 copy of its weight; the
    half-precision output is replaced), so logits and the uncertainties taken from them keep float32
    precision. Returns whether it applied (not for float32 models)."""
    head = model.get_output_embeddings()
    if head is None or head.weight.dtype not in (torch.float16, torch.bfloat16):
        return False
    weight = head.weight.detach().float()
    bias = None if getattr(head, "bias", None) is None else head.bias.detach().float()

    def hook(module, args, output):
        return torch.nn.functional.linear(args[0].float(), weight, bias)

    head.register_forward_hook(hook)
    return True


class _LayerReached(Exception):
    """Raised by the attention hook to stop a forward pass once the wanted layer has run."""


class _Clock:
    """Wall-clock stamps that wait for queued device work first, so GPU timings are real."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


class FixedViTGrid:
    """Geometry of a fixed-size ViT (LLaVA's CLIP tower, InstructBLIP's ViT): the input is the tower's
    image_size square, the grid (image_size / patch_size) cells a side."""

    @property
    def vision_input_px(self) -> int:
        return int(self.model.config.vision_config.image_size)

    def visual_grid(self) -> tuple[int, int]:
        vc = self.model.config.vision_config
        g = vc.image_size // vc.patch_size
        return (g, g)


class HFBackend(VLMBackend):
    """Common load/encode/generate/attention logic; subclasses supply the model-specific parts."""

    model_class_name: str = ""
    default_settings = BackendSettings()

    def __init__(self, model, tokenizer, image_processor, settings: BackendSettings, model_id: str,
                 device: torch.device):
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.settings = settings
        self.model_id = model_id
        self.device = device
        self._clock = _Clock(device)
        self._feature_cache: dict[int, tuple[Any, torch.Tensor, dict[str, torch.Tensor]]] = {}
        self._prefix_cache: dict[tuple, tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]] = {}
        self._prompt_states: dict[tuple, tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]] = {}
        self._token_cache: dict[str, dict[str, torch.Tensor]] = {}
        self._check_config()
        layer = settings.attention_layer
        if layer is not None and not 0 <= layer < self.n_layers:
            raise BackendError(f"attention_layer {layer} is out of range; this model has decoder layers "
                               f"0..{self.n_layers - 1}")

    # ----- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str, *, device: str = "cpu", settings: BackendSettings | None = None,
             overrides: dict[str, Any] | None = None) -> "HFBackend":
        import transformers  # defers transformers
        from transformers import AutoImageProcessor, AutoTokenizer  # defers transformers

        settings = settings or cls.default_settings
        if Path(path).is_dir():
            settings = settings.merged(read_settings_file(path), where=str(Path(path) / "edgevlm.json"))
        settings = settings.merged(overrides or {}, where="command line")
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise BackendError(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(f"--device {device!r}: CUDA is not available on this machine; use --device cpu")
        if settings.dtype == "auto":
            dtype = "auto" if dev.type == "cuda" else torch.float32
        else:
            dtype = _DTYPES[settings.dtype]
        model_cls = getattr(transformers, cls.model_class_name)
        try:
            model = model_cls.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
            tokenizer = AutoTokenizer.from_pretrained(path)
            image_processor = AutoImageProcessor.from_pretrained(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BackendError(f"--model {path!r}: cannot load a {cls.model_class_name} checkpoint with "
                               f"tokenizer and image processor ({_first_line(exc)})") from None
        model.to(dev).eval()
        float32_logits(model)
        model_id = settings.model_id or str(path)
        return cls(model, tokenizer, image_processor, settings, model_id, dev)

    # ----- subclass hooks ----------------------------------------------------------------------
    def _check_config(self) -> None:
        """Validate settings against the model config; raise BackendError naming the key."""

    def _image_inputs(self, images: Sequence[Any]) -> tuple[dict[str, torch.Tensor], list[int]]:
        """Pixel tensors for the images and the number of placeholder tokens of each."""
        raise NotImplementedError

    def _placeholder(self, n_tokens: int) -> str:
        """Prompt text standing for one image of n_tokens visual tokens."""
        raise NotImplementedError

    def _extra_inputs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}

    def _grid_positions(self, positions: np.ndarray) -> np.ndarray:
        """The positions, among an image's placeholder positions, that form the visual grid."""
        return positions

    def _encode_pixels(self, pixel_inputs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Projected visual features, one (n_tokens, d_model) tensor per image."""
        raise NotImplementedError

    def _per_image_inputs(self, pixel_inputs: dict[str, torch.Tensor], k: int) -> dict[str, torch.Tensor]:
        """Model inputs besides the features that belong to image k (e.g. Qwen's grid row)."""
        return {}

    def _decoder_layers(self):
        return self.model.model.language_model.layers

    def _lm(self):
        """The module generation and attention passes call with Encoded.inputs (the whole VLM here)."""
        return self.model

    def _image_map(self, row: torch.Tensor, encoded: Encoded, offset: int) -> np.ndarray:
        """The (rows, cols) map of image 0 from one head-averaged attention row over all positions."""
        pos = torch.as_tensor(self._grid_positions(encoded.image_positions[0]) + offset, device=row.device)
        rows, cols = self.visual_grid()
        return row[pos].reshape(rows, cols).cpu().numpy().astype(np.float64)

    @property
    def image_token_id(self) -> int:
        return int(self.model.config.image_token_id)

    @property
    def n_layers(self) -> int:
        return len(self._decoder_layers())

    @property
    def attention_layer(self) -> int:
        layer = self.settings.attention_layer
        if layer is None:
            # Per-model default: LLaVA-1.5-7B uses layer 14 of 32 (ViCrop); other depths keep the ratio.
            layer = min(int(round(14 / 32 * self.n_layers)), self.n_layers - 1)
        return layer

    # ----- prompts -----------------------------------------------------------------------------
    def build_prompt(self, n_tokens: Sequence[int], question: str) -> str:
        images = self.settings.image_joiner.join(self._placeholder(n) for n in n_tokens)
        return self.settings.prompt_template.replace("{images}", images).replace("{question}", question)

    FEATURE_CACHE_SIZE = 8

    @torch.inference_mode()
    def image_features(self, images: Sequence[Any]) -> tuple[list[torch.Tensor], list[dict], float]:
        """Per-image projected features and extra inputs, computing only uncached images; + vision seconds."""
        images = list(images)
        found = {id(img): self._feature_cache[id(img)] for img in images if id(img) in self._feature_cache}
        todo = []
        for img in images:
            if id(img) not in found and all(img is not t for t in todo):
                todo.append(img)
        t_vision = 0.0
        if todo:
            pixel_inputs, n_tokens = self._image_inputs(todo)
            pixel_inputs = {k: v.to(self.device) for k, v in pixel_inputs.items()}
            if pixel_inputs["pixel_values"].is_floating_point():
                pixel_inputs["pixel_values"] = pixel_inputs["pixel_values"].to(self.model.dtype)
            t0 = self._clock.now()
            feats = self._encode_pixels(pixel_inputs)
            t_vision = self._clock.now() - t0
            for k, img in enumerate(todo):
                if feats[k].shape[0] != n_tokens[k]:
                    raise RuntimeError(f"vision encoder gave {feats[k].shape[0]} tokens, expected {n_tokens[k]}")
                while len(self._feature_cache) >= self.FEATURE_CACHE_SIZE:
                    self._feature_cache.pop(next(iter(self._feature_cache)))
                found[id(img)] = self._feature_cache[id(img)] = (img, feats[k], self._per_image_inputs(pixel_inputs, k))
        entries = [found[id(img)] for img in images]
        return [e[1] for e in entries], [e[2] for e in entries], t_vision

    def encode(self, images: Sequence[Any], question: str, *, add_suffix: bool = True) -> Encoded:
        from transformers.modeling_outputs import BaseModelOutputWithPooling  # defers transformers

        feats, extras, t_vision = self.image_features(images)
        n_tokens = [int(f.shape[0]) for f in feats]
        text = question + (self.settings.question_suffix if add_suffix else "")
        prompt = self.build_prompt(n_tokens, text)
        ids = self._tokenize(prompt)
        input_ids = ids["input_ids"]
        flat = input_ids[0].numpy()
        pos = np.flatnonzero(flat == self.image_token_id)
        if pos.size != sum(n_tokens):
            raise BackendError(
                f"the tokenizer turned the prompt into {pos.size} image tokens (id {self.image_token_id}) but "
                f"the images need {sum(n_tokens)}; check prompt_template and that the tokenizer treats "
                f"{self.tokenizer.convert_ids_to_tokens(self.image_token_id)!r} as one special token")
        bounds = np.cumsum([0] + list(n_tokens))
        per_image = [pos[bounds[k]:bounds[k + 1]] for k in range(len(n_tokens))]
        inputs = {"input_ids": input_ids, "attention_mask": ids.get("attention_mask", torch.ones_like(input_ids))}
        inputs.update(self._extra_inputs(input_ids))
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        for key in extras[0]:
            inputs[key] = torch.cat([e[key] for e in extras], dim=0)
        inputs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=list(feats))}
        return Encoded(inputs=inputs, image_positions=per_image,
                       prompt_tokens=int(flat.size - pos.size), n_images=len(n_tokens), t_vision_s=t_vision)

    TOKEN_CACHE_SIZE = 64

    def _tokenize(self, prompt: str) -> dict[str, torch.Tensor]:
        """The tokenizer's tensors for `prompt` (fresh copies); a small cache serves a sample's repeated
        prompts (stage 1 = question pass, stage 2 = oracle pass) and the generic prompt."""
        hit = self._token_cache.get(prompt)
        if hit is None:
            while len(self._token_cache) >= self.TOKEN_CACHE_SIZE:
                self._token_cache.pop(next(iter(self._token_cache)))
            hit = self._token_cache[prompt] = dict(self.tokenizer(prompt, return_tensors="pt"))
        return {k: v.clone() for k, v in hit.items()}

    def prefetch(self, images: Sequence[Any]) -> None:
        """Visual features of all these images in one vision-encoder pass (cached for encode)."""
        if images:
            self.image_features(images)

    def clear_cache(self) -> None:
        """Forget cached visual features and prefix states (extract calls this after each batch)."""
        self._feature_cache.clear()
        self._prefix_cache.clear()
        self._prompt_states.clear()

    def _fresh(self, encoded: Encoded) -> dict[str, Any]:
        """The inputs with a fresh mm_encoder_outputs dict (transformers may write into it)."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling  # defers transformers

        inputs = dict(encoded.inputs)
        mm = inputs.get("mm_encoder_outputs")
        if mm is not None:
            inputs["mm_encoder_outputs"] = {k: BaseModelOutputWithPooling(pooler_output=list(v.pooler_output))
                                            for k, v in mm.items()}
        return inputs

    # ----- generation --------------------------------------------------------------------------
    def eos_token_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        if ids is None:
            ids = self.tokenizer.eos_token_id
        if ids is None:
            return []
        return [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]

    @torch.inference_mode()
    def generate(self, encoded: Encoded, max_new_tokens: int | None = None) -> Generation:
        max_new = int(max_new_tokens or self.settings.max_new_tokens)
        eos = self.eos_token_ids()
        steps: list[float] = []
        inputs = self._fresh(encoded)
        t0 = self._clock.now()
        decode = self._greedy_loop if self.direct_greedy else self._hf_generate
        seq, rows = decode(inputs, max_new, eos, steps)
        return self._generation(seq, torch.stack(rows), eos, encoded.t_vision_s, t0, steps)

    def _generation(self, seq: list[int], logits: torch.Tensor, eos: list[int], t_vision: float, t0: float,
                    steps: list[float]) -> Generation:
        """A Generation from greedy tokens and their logit rows (cut after the first EOS; float32 logits)."""
        if eos:
            first = next((k for k, t in enumerate(seq) if t in eos), None)
            if first is not None:
                seq = seq[:first + 1]
        logits = logits[:len(seq)].float().cpu().numpy()
        if len(seq) != logits.shape[0]:
            raise RuntimeError(f"generate returned {len(seq)} tokens but {logits.shape[0]} logit rows")
        stopped = bool(seq) and seq[-1] in eos
        keep = len(seq) - 1 if stopped else len(seq)
        keep = max(keep, 1)          # an immediate EOS still counts as the one (empty-answer) token
        tokens = seq[:keep]
        text = self.tokenizer.decode([t for t in tokens if t not in eos], skip_special_tokens=True).strip()
        steps = steps[:len(seq)]
        t_prefill = (steps[0] - t0) if steps else None
        t_decode = (steps[-1] - steps[0]) / (len(steps) - 1) if len(steps) > 1 else None
        return Generation(tokens=tokens, text=text, logits=logits[:keep], stopped_on_eos=stopped,
                          t_vision_s=t_vision, t_prefill_s=t_prefill, t_decode_token_s=t_decode)

    # ----- batches (models.batched) ----------------------------------------------------------
    #: pass explicit position ids (cumulative attention mask) with left padding; off where the
    #: model derives them itself from the mask (Qwen2.5-VL's M-RoPE index)
    batch_position_ids = True

    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            eos = self.eos_token_ids()
            pad = eos[0] if eos else 0
        return int(pad)

    def collate(self, encodeds: Sequence[Encoded]) -> tuple[dict[str, Any], list[int]]:
        """One left-padded batch of several prompts' inputs, and each prompt's left offset."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling  # defers transformers

        lengths = [int(e.inputs["attention_mask"].shape[1]) for e in encodeds]
        length = max(lengths)
        offsets = [length - n for n in lengths]
        batch: dict[str, Any] = {}
        for key, first in encodeds[0].inputs.items():
            if key == "mm_encoder_outputs":
                batch[key] = {m: BaseModelOutputWithPooling(pooler_output=[f for e in encodeds
                                                                           for f in e.inputs[key][m].pooler_output])
                              for m in first}
            elif first.dim() >= 2 and first.shape[0] == 1 and first.shape[1] == lengths[0]:   # per position
                fill = self.pad_id() if key == "input_ids" else 0
                batch[key] = torch.cat([torch.cat([e.inputs[key].new_full((1, off, *first.shape[2:]), fill),
                                                   e.inputs[key]], dim=1)
                                        for e, off in zip(encodeds, offsets)], dim=0)
            else:                                     # per-image rows (e.g. Qwen's image_grid_thw)
                batch[key] = torch.cat([e.inputs[key] for e in encodeds], dim=0)
        if self.batch_position_ids:
            batch["position_ids"] = (batch["attention_mask"].long().cumsum(-1) - 1).clamp(min=0)
        return batch, offsets

    @torch.inference_mode()
    def generate_batch(self, encodeds: Sequence[Encoded], max_new_tokens: int | None = None) -> list[Generation]:
        """Greedy answers for several prompts in one left-padded batch; the same tokens and (to float
        rounding) logits as generate() on each. Timings are the batch's."""
        if len(encodeds) == 1:
            return [self.generate(encodeds[0], max_new_tokens)]
        max_new = int(max_new_tokens or self.settings.max_new_tokens)
        eos = self.eos_token_ids()
        steps: list[float] = []
        t0 = self._clock.now()
        if self.direct_greedy and self._can_share_prefix(encodeds):
            seqs, rows = self._greedy_loop_batch(*self._prefill_after_prefix(encodeds, max_new), max_new, eos, steps)
        elif self.direct_greedy:
            inputs = self.collate(encodeds)[0]
            with self._top_layer_last_position():
                out = self._lm()(**inputs, use_cache=True, logits_to_keep=1)
            cache = next(iter(_cache_kwarg(out).values()))
            seqs, rows = self._greedy_loop_batch(inputs["attention_mask"], inputs.get("position_ids"), out.logits[:, -1],
                                                 cache, max_new, eos, steps)
        else:
            inputs, _ = self.collate(encodeds)
            seqs, rows = self._hf_generate_batch(inputs, max_new, eos, steps)
        logits = torch.stack(rows, dim=1)               # (batch, steps, vocab)
        return [self._generation(seqs[b], logits[b], eos, e.t_vision_s, t0, steps)
                for b, e in enumerate(encodeds)]

    #: on CPU, batched prefills after the shared prefix run in chunks of about this many query tokens
    #: (rows x padded width): a cache-sized working set made the tiny model's prefill ~25 % faster than one
    #: 32 x 105-token batch (measured 124 vs 170 ms); decoding then runs the whole batch. Not on GPUs.
    CPU_PREFILL_CHUNK_TOKENS = 768

    def _prefill_after_prefix(self, encodeds: Sequence[Encoded], max_new: int):
        """Prefill of prompts sharing the prefix (in chunks on CPU, all padded to one width): the batch's
        attention mask, position ids, last-position logits and KV cache (room for `max_new` more tokens);
        one-image prompts' states are kept for the question attention pass."""
        from edgevlm.models.kv_buffer import joined_with_spare_room  # defers transformers

        n = self._prefix_len(encodeds[0])
        width = max(int(e.inputs["input_ids"].shape[1]) for e in encodeds) - n
        rows = len(encodeds)
        if self.device.type == "cpu":
            rows = max(1, self.CPU_PREFILL_CHUNK_TOKENS // max(width, 1))
        masks, positions, logits, caches = [], [], [], []
        for k in range(0, len(encodeds), rows):
            part = encodeds[k:k + rows]
            inputs = self.collate_after_prefix(part, width=width)
            with self._top_layer_last_position():
                out = self._lm()(**inputs, use_cache=True, logits_to_keep=1)
            self._keep_prompt_states(part, inputs, out)
            masks.append(inputs["attention_mask"])
            positions.append(inputs["position_ids"])
            logits.append(out.logits[:, -1])
            caches.append(next(iter(_cache_kwarg(out).values())))
        return (torch.cat(masks), torch.cat(positions), torch.cat(logits),
                joined_with_spare_room(caches, max_new, self.model.config))

    def _greedy_loop_batch(self, mask: torch.Tensor, pos: torch.Tensor | None, first_logits: torch.Tensor,
                           cache: Any, max_new: int, eos: list[int], steps: list[float]):
        """Greedy decoding of a prefilled batch: tokens and logit rows per prompt (cut at max_new or
        when every prompt has given an EOS); each step's keys/values are written in place."""
        from edgevlm.models.kv_buffer import with_spare_room  # defers transformers

        lm = self._lm()
        cache_kw = {_cache_keyword(lm): with_spare_room(cache, max_new)}
        n = mask.shape[0]
        seqs: list[list[int]] = [[] for _ in range(n)]
        done = torch.zeros(n, dtype=torch.bool, device=mask.device)
        eos_t = torch.tensor(eos or [-1], device=mask.device)
        rows = []
        row = first_logits
        while True:
            tok = row.argmax(dim=-1)
            rows.append(row)
            for b, t in enumerate(tok.tolist()):
                seqs[b].append(t)
            steps.append(self._clock.now())
            done |= torch.isin(tok, eos_t)
            if bool(done.all()) or len(rows) >= max_new:
                return seqs, rows
            mask = torch.cat([mask, mask.new_ones((n, 1))], dim=1)
            extra = {}
            if pos is not None:
                pos = pos[:, -1:] + 1
                extra["position_ids"] = pos
            out = lm(input_ids=tok[:, None], attention_mask=mask, use_cache=True, **cache_kw, **extra)
            row = out.logits[:, -1]

    #: decoder layer classes whose forward is exactly pre-norm attention + residual, pre-norm MLP +
    #: residual (transformers' Llama), so `_top_layer_last_position` may restate it
    TOP_LAYER_SLICEABLE = ("LlamaDecoderLayer",)

    @contextlib.contextmanager
    def _top_layer_last_position(self):
        """Within: the top decoder layer runs attention on every position (the KV cache needs their keys
        and values) but its MLP on the last position only, all a prefill with logits_to_keep=1 uses; the
        other positions' top-layer MLP (~3/4 of that layer) is skipped. Batched prefills only (the
        one-at-a-time path stays the reference); other layer types run unchanged."""
        layer = self._decoder_layers()[-1]
        if type(layer).__name__ not in self.TOP_LAYER_SLICEABLE:
            yield
            return

        def forward(hidden_states, attention_mask=None, position_ids=None, cache=None, use_cache=False,
                    position_embeddings=None, **kwargs):
            attn, _ = layer.self_attn(hidden_states=layer.input_layernorm(hidden_states),
                                      attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                                      use_cache=use_cache, position_embeddings=position_embeddings, **kwargs)
            last = hidden_states[:, -1:] + attn[:, -1:]
            return last + layer.mlp(layer.post_attention_layernorm(last))

        layer.forward = forward
        try:
            yield
        finally:
            del layer.forward

    # ----- shared image prefix (batched calls) ------------------------------------------------------
    #: batched calls compute the key/value states of each prompt's prefix up to the end of image 0 (the
    #: global image) once, and run only the rest of each prompt on top of them: stage 1, both attention
    #: passes, stage 2 and the oracle pass share that prefix. Needs a causal LM whose prompts put image 0
    #: first (template text before it is fine) and explicit position ids; off for Qwen2.5-VL (M-RoPE).
    share_prefix = False

    def _prefix_len(self, encoded: Encoded) -> int:
        return int(encoded.image_positions[0][-1]) + 1

    def _can_share_prefix(self, encodeds: Sequence[Encoded]) -> bool:
        return (self.share_prefix and self.batch_position_ids and len(encodeds) > 1
                and len({self._prefix_len(e) for e in encodeds}) == 1
                and all("mm_encoder_outputs" in e.inputs for e in encodeds))

    @torch.inference_mode()
    def _prefix_states(self, encodeds: Sequence[Encoded]) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        """Per prompt, per decoder layer, the (key, value) states of its prefix, shape (1, heads, P, dim);
        cached by (image-0 features, prefix ids), the missing ones computed in one unpadded forward."""
        n = self._prefix_len(encodeds[0])
        keys, todo = [], {}
        for e in encodeds:
            feat = e.inputs["mm_encoder_outputs"]["image"].pooler_output[0]
            ids = e.inputs["input_ids"][:, :n]
            key = (id(feat), tuple(ids[0].tolist()))
            keys.append(key)
            if key not in self._prefix_cache and key not in todo:
                todo[key] = (feat, ids)
        if todo:
            ids = torch.cat([v[1] for v in todo.values()], dim=0)
            mm = {"image": _pooled([v[0] for v in todo.values()])}
            pos = torch.arange(n, device=ids.device).expand(ids.shape[0], n)
            with self._top_layer_last_position():
                out = self._lm()(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=pos,
                                 mm_encoder_outputs=mm, use_cache=True, logits_to_keep=1)
            cache = next(iter(_cache_kwarg(out).values()))
            for b, (key, (feat, _)) in enumerate(todo.items()):
                self._prefix_cache[key] = (feat, [(layer.keys[b:b + 1], layer.values[b:b + 1])
                                                  for layer in cache.layers])
        return [self._prefix_cache[k][1] for k in keys]

    def collate_after_prefix(self, encodeds: Sequence[Encoded], width: int | None = None) -> dict[str, Any]:
        """Batch inputs that run only the prompts' parts after the shared prefix, on top of its cached
        states: [prefix][padding][rest], the padding masked out and position ids as if unpadded; the rests
        are padded to `width` (default: the longest)."""
        from transformers import DynamicCache  # defers transformers

        n = self._prefix_len(encodeds[0])
        states = self._prefix_states(encodeds)
        rests = [e.inputs["input_ids"][:, n:] for e in encodeds]
        width = max([int(r.shape[1]) for r in rests] + [width or 0])
        pad = self.pad_id()
        ids = torch.cat([torch.cat([r.new_full((1, width - r.shape[1]), pad), r], dim=1) for r in rests])
        mask = torch.ones((len(rests), n + width), dtype=torch.long, device=ids.device)
        for b, r in enumerate(rests):
            mask[b, n:n + width - r.shape[1]] = 0
        cache = DynamicCache(ddp_cache_data=[(torch.cat([s[l][0] for s in states]), torch.cat([s[l][1] for s in states]))
                                             for l in range(len(states[0]))], config=self.model.config)
        inputs: dict[str, Any] = {"input_ids": ids, "attention_mask": mask,
                                  "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)[:, n:],
                                  _cache_keyword(self._lm()): cache}
        later = [f for e in encodeds for f in e.inputs["mm_encoder_outputs"]["image"].pooler_output[1:]]
        if later:
            inputs["mm_encoder_outputs"] = {"image": _pooled(later)}
        return inputs

    def _keep_prompt_states(self, encodeds: Sequence[Encoded], inputs: dict[str, Any], out: Any) -> None:
        """After a batched one-image prefill (stage 1): keep each prompt's states but its last token's, up
        to the attention layer, so the question attention pass (the same prompt) runs only that token."""
        cache = next(iter(_cache_kwarg(out).values()))
        layers = cache.layers[:self.attention_layer + 1]
        for b, e in enumerate(encodeds):
            if e.n_images != 1:
                return
            cols = torch.nonzero(inputs["attention_mask"][b])[:-1, 0]
            feat = e.inputs["mm_encoder_outputs"]["image"].pooler_output[0]
            self._prompt_states[self._prompt_key(e)] = (feat, [(layer.keys[b:b + 1, :, cols], layer.values[b:b + 1, :, cols])
                                               for layer in layers])

    def _prompt_key(self, encoded: Encoded) -> tuple:
        """Kept states' key: image 0's features (held by the entry, so the id stays valid), ids but the last."""
        feat = encoded.inputs["mm_encoder_outputs"]["image"].pooler_output[0]
        return (id(feat), tuple(encoded.inputs["input_ids"][0, :-1].tolist()))

    def collate_last_token(self, encodeds: Sequence[Encoded]) -> tuple[dict[str, Any], list[int]]:
        """Batch inputs that run only each prompt's last token on top of its kept states (a stage-1 prompt
        seen before): [padding][states][last token], and each prompt's left offset."""
        from transformers import DynamicCache  # defers transformers

        states = [self._prompt_states[self._prompt_key(e)][1] for e in encodeds]
        lengths = [int(s[0][0].shape[2]) for s in states]
        width = max(lengths)
        offsets = [width - n for n in lengths]

        def padded(t: torch.Tensor, off: int) -> torch.Tensor:
            return torch.cat([t.new_zeros((1, t.shape[1], off, t.shape[3])), t], dim=2) if off else t

        cache = DynamicCache(ddp_cache_data=[(torch.cat([padded(s[l][0], o) for s, o in zip(states, offsets)]),
                                              torch.cat([padded(s[l][1], o) for s, o in zip(states, offsets)]))
                                             for l in range(len(states[0]))], config=self.model.config)
        ids = torch.cat([e.inputs["input_ids"][:, -1:] for e in encodeds])
        mask = torch.ones((len(encodeds), width + 1), dtype=torch.long, device=ids.device)
        for b, off in enumerate(offsets):
            mask[b, :off] = 0
        inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": torch.tensor(lengths, device=ids.device)[:, None],
                  _cache_keyword(self._lm()): cache}
        return inputs, offsets

    def _hf_generate_batch(self, inputs: dict[str, Any], max_new: int, eos: list[int], steps: list[float]):
        seq, rows = self._hf_generate(inputs, max_new, eos, steps, batched=True)
        return seq, rows

    @torch.inference_mode()
    def attention_batch(self, images: Sequence[Any], questions: Sequence[str]) -> list[AttentionMaps]:
        """attention_to_image for several (image, question) pairs: all question and generic passes in
        one left-padded forward."""
        layer = self.attention_layer
        # two forwards, so that the short question prompts are not padded to the generic prompt's length
        q = self._last_position_attention_many([self.encode([img], t) for img, t in zip(images, questions)], layer)
        g = self._last_position_attention_many(
            [self.encode([img], self.settings.generic_prompt, add_suffix=False) for img in images], layer)
        return [AttentionMaps(question=qk, generic=gk, relative=qk / (gk + self.settings.attention_eps), layer=layer)
                for qk, gk in zip(q, g)]

    def _hf_generate(self, inputs: dict[str, Any], max_new: int, eos: list[int], steps: list[float],
                     batched: bool = False):
        """Greedy tokens and their raw logit rows by transformers' `generate`; clock times go to `steps`."""
        from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList  # defers transformers

        clock = self._clock
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else (eos[0] if eos else 0)

        class _StepClock(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                steps.append(clock.now())
                return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

        # Pure greedy on the raw logits: transformers fills every unset field from the checkpoint's
        # generation_config (e.g. Qwen2.5-VL ships repetition_penalty 1.05), so neutral values are explicit.
        cfg = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new, min_new_tokens=0,
                               temperature=1.0, top_p=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0,
                               encoder_repetition_penalty=1.0, suppress_tokens=[], begin_suppress_tokens=[],
                               eos_token_id=eos or None, pad_token_id=pad, output_logits=True,
                               return_dict_in_generate=True, use_cache=True)
        out = self.model.generate(**inputs, generation_config=cfg,
                                  stopping_criteria=StoppingCriteriaList([_StepClock()]))
        prompt_len = inputs["input_ids"].shape[1]
        if batched:
            return out.sequences[:, prompt_len:].tolist(), list(out.logits)
        return out.sequences[0, prompt_len:].tolist(), [step[0] for step in out.logits]

    #: Greedy decoding by a plain loop over the model's KV cache instead of `generate`: the same
    #: tokens and raw logits (tests/test_backends.py compares them), about 15 % faster per answer on
    #: the tiny model, where generate's per-call set-up is a large share. Off where the model needs
    #: generate's position bookkeeping (Qwen2.5-VL's M-RoPE deltas).
    direct_greedy = False

    def _greedy_loop(self, inputs: dict[str, Any], max_new: int, eos: list[int], steps: list[float]):
        """Greedy tokens and their raw logit rows; appends the clock time after each token to `steps`."""
        lm = self._lm()
        out = lm(**inputs, use_cache=True, logits_to_keep=1)
        mask = inputs["attention_mask"]
        seq, rows = [], []
        while True:
            row = out.logits[0, -1]
            tok = int(row.argmax())
            seq.append(tok)
            rows.append(row)
            steps.append(self._clock.now())
            if tok in eos or len(seq) >= max_new:
                return seq, rows
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            out = lm(input_ids=torch.tensor([[tok]], device=mask.device), attention_mask=mask,
                     use_cache=True, **_cache_kwarg(out))

    # ----- attention ---------------------------------------------------------------------------
    @torch.inference_mode()
    def _last_position_attention(self, encoded: Encoded, layer: int) -> np.ndarray:
        """Head-averaged attention from the last prompt position to image 0's grid tokens, (rows, cols)."""
        return self._last_position_attention_many([encoded], layer)[0]

    @torch.inference_mode()
    def _last_position_attention_many(self, encodeds: Sequence[Encoded], layer: int) -> list[np.ndarray]:
        """_last_position_attention for several prompts in one left-padded forward pass."""
        if len(encodeds) == 1:
            inputs, offsets = self._fresh(encodeds[0]), [0]
        elif self._can_share_prefix(encodeds) and all(self._prompt_key(e) in self._prompt_states for e in encodeds):
            inputs, offsets = self.collate_last_token(encodeds)     # stage 1's prompts: their last token only
        elif self._can_share_prefix(encodeds):    # image 0 sits in the prefix: its positions are unmoved
            inputs, offsets = self.collate_after_prefix(encodeds), [0] * len(encodeds)
        else:
            inputs, offsets = self.collate(encodeds)
        text_cfg = self.model.config.get_text_config()
        previous = text_cfg._attn_implementation
        captured: dict[str, torch.Tensor] = {}

        def hook(module, args, output):
            captured["w"] = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            raise _LayerReached  # the layers above `layer` and the LM head are not needed

        handle = self._decoder_layers()[layer].self_attn.register_forward_hook(hook)
        self.model.set_attn_implementation({"text_config": "eager"})
        try:
            self._lm()(**inputs, use_cache=False, logits_to_keep=1)
        except _LayerReached:
            pass
        finally:
            handle.remove()
            self.model.set_attn_implementation({"text_config": previous})
        w = captured.get("w")
        if w is None:
            raise RuntimeError(f"decoder layer {layer} returned no attention weights under eager attention")
        return [self._image_map(w[b, :, -1, :].float().mean(dim=0), enc, off)
                for b, (enc, off) in enumerate(zip(encodeds, offsets))]

    def attention_to_image(self, image: Any, question: str) -> AttentionMaps:
        layer = self.attention_layer
        q = self._last_position_attention(self.encode([image], question), layer)
        g = self._last_position_attention(self.encode([image], self.settings.generic_prompt, add_suffix=False), layer)
        rel = q / (g + self.settings.attention_eps)
        return AttentionMaps(question=q, generic=g, relative=rel, layer=layer)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["dtype"] = str(self.model.dtype).replace("torch.", "")
        d["n_layers"] = self.n_layers
        return d


def _pooled(features: list[torch.Tensor]) -> Any:
    from transformers.modeling_outputs import BaseModelOutputWithPooling  # defers transformers

    return BaseModelOutputWithPooling(pooler_output=list(features))



def _cache_keyword(lm: Any) -> str:
    """The forward keyword for a KV cache in the installed transformers (`cache` from 5.x, else
    `past_key_values`)."""
    return "cache" if "cache" in inspect.signature(type(lm).forward).parameters else "past_key_values"


def _cache_kwarg(out: Any) -> dict[str, Any]:
    """The KV cache of a forward output as the keyword the next forward takes: `cache` where the
    installed transformers names it so (>= 5.x; `past_key_values` there warns FutureWarning, to be
    removed in 5.40), `past_key_values` before."""
    keys = out.keys() if hasattr(out, "keys") else ()
    if "cache" in keys:
        return {"cache": out["cache"]}
    return {"past_key_values": out["past_key_values"]}
