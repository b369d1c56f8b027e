"""The two-stage pipeline at every JPEG quality, plus the HD/tiling pass, for a tiny LLaVA: trace format v2 rows.

For each sample and each quality q in `qualities` (ascending):
  1. stage 1 answers on the decoded q-JPEG of the global image (the original resized to the vision
     input); per-token min-entropy / Shannon / margin from its logits (models.uncertainty);
  2. relative attention (question vs generic prompt, the checkpoint's layer, head-averaged) on that
     same decoded image drives the ViCrop box search (models.boxsearch, the checkpoint's settings);
  3. the crop of the ORIGINAL at that box, resized to the input and sent as a q-JPEG; stage 2
     answers on the decoded global + local images (local_jpeg_bytes[q] is that crop's size);
  4. the oracle crop (gt box grown to the smallest window, models.boxsearch.box_around), at q;
  5. HD (LLaVA-1.5-HD style, `full_cloud`): the original sent as a q-JPEG; the server splits the
     decoded original into hd_grid x hd_grid tiles, each resized to the input, and answers with the
     downsampled thumbnail followed by the tiles in one prompt.
edge_score is stage 1 on the uncompressed global view: the same tiny model run on the device.

The qualities of one sample run as one batch per pass (the prompts of a pass have equal length, so
no padding is needed); the maths is the backend's (models.llava.LlavaBackend), which
tests/test_quality_trace.py checks: the same answers, logits and attention maps.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from edgevlm.models.backend import BackendSettings, read_settings_file
from edgevlm.models.boxsearch import DEFAULT_RATIOS, box_around, search_box
from edgevlm.models.hf_base import _cache_kwarg
from edgevlm.models.jpeg import jpeg_encode, to_rgb
from edgevlm.models.scoring import score_answer
from edgevlm.models.uncertainty import token_uncertainty
import json

RESAMPLE = Image.Resampling.BICUBIC
#: The trace's qualities: the seed's reference q100 and the range down to q5.
QUALITIES = (5, 10, 25, 50, 75, 95, 100)


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def hd_boxes(grid: int, w: int, h: int) -> list[tuple[int, int, int, int]]:
    """Row-major grid x grid tile boxes of a w x h image."""
    xs = [round(k * w / grid) for k in range(grid + 1)]
    ys = [round(k * h / grid) for k in range(grid + 1)]
    return [(xs[j], ys[i], xs[j + 1], ys[i + 1]) for i in range(grid) for j in range(grid)]


@dataclass
class Decoded:
    """Greedy answer of one row: generated tokens (final EOS dropped unless alone) and their logits."""
    tokens: list[int]
    logits: np.ndarray
    text: str


class TinyLlavaRunner:
    """Batched greedy decoding and relative attention for a LLaVA checkpoint of fixed-size square inputs."""

    def __init__(self, model_dir: str | Path, threads: int | None = None):
        from transformers import AutoTokenizer, LlavaForConditionalGeneration  # defers transformers
        if threads:
            torch.set_num_threads(threads)
        self.model = LlavaForConditionalGeneration.from_pretrained(str(model_dir), dtype=torch.float32,
                                                                   attn_implementation="sdpa").eval()
        self.tok = AutoTokenizer.from_pretrained(str(model_dir))
        self.settings = BackendSettings().merged(read_settings_file(model_dir), where=str(model_dir))
        cfg = self.model.config
        self.px = int(cfg.vision_config.image_size)
        self.grid = self.px // int(cfg.vision_config.patch_size)
        self.n_img = self.grid * self.grid
        self.image_token_id = int(cfg.image_token_id)
        if cfg.vision_feature_select_strategy != "default" or not isinstance(cfg.vision_feature_layer, int):
            raise ValueError("the batched runner supports CLIP towers with strategy 'default' and one feature layer")
        pp = read_json(Path(model_dir) / "preprocessor_config.json")
        self.mean = torch.tensor(pp.get("image_mean", [0.5] * 3)).view(1, 3, 1, 1)
        self.std = torch.tensor(pp.get("image_std", [0.5] * 3)).view(1, 3, 1, 1)
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, (list, tuple)) else [eos])
        self.model_id = self.settings.model_id or str(model_dir)

    # ----- inputs ---------------------------------------------------------------------------
    def pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Input-size RGB images -> normalised pixel tensor, as the CLIP image processor makes it."""
        arr = np.stack([np.asarray(to_rgb(im), dtype=np.uint8) for im in images])
        if arr.shape[1:3] != (self.px, self.px):
            raise ValueError(f"images must be {self.px}x{self.px}, got {arr.shape[1:3]}")
        x = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div_(255.0)
        return x.sub_(self.mean).div_(self.std)

    @torch.inference_mode()
    def features(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Projected visual features (N, tokens, d)."""
        cfg = self.model.config
        out = self.model.model.vision_tower(self.pixels(images), output_hidden_states=True)
        hs = out.hidden_states[cfg.vision_feature_layer][:, 1:]
        return self.model.model.multi_modal_projector(hs)

    def prompt_ids(self, n_images: int, question: str) -> list[int]:
        st = self.settings
        img = self.tok.convert_ids_to_tokens(self.image_token_id) * self.n_img
        text = st.prompt_template.replace("{images}", st.image_joiner.join([img] * n_images)).replace(
            "{question}", question)
        return self.tok(text).input_ids

    def embeds(self, ids: list[int], feats: torch.Tensor) -> torch.Tensor:
        """(B, T, d) input embeddings: the prompt with each row's images (feats (B, n_images, tokens, d))."""
        t = torch.tensor(ids)
        emb = self.model.get_input_embeddings()(t)[None].repeat(feats.shape[0], 1, 1)
        pos = torch.nonzero(t == self.image_token_id).squeeze(1)
        if pos.numel() != feats.shape[1] * feats.shape[2]:
            raise ValueError(f"prompt has {pos.numel()} image tokens, the images need {feats.shape[1] * feats.shape[2]}")
        emb[:, pos] = feats.reshape(feats.shape[0], -1, feats.shape[-1]).to(emb.dtype)
        return emb

    # ----- passes ---------------------------------------------------------------------------
    @torch.inference_mode()
    def greedy(self, emb: torch.Tensor, max_new: int | None = None) -> list[Decoded]:
        """Greedy decoding of every row (equal-length prompts), by a KV-cache loop."""
        max_new = int(max_new or self.settings.max_new_tokens)
        lm, head = self.model.model.language_model, self.model.lm_head
        B = emb.shape[0]
        mask = torch.ones(B, emb.shape[1], dtype=torch.long)
        out = lm(inputs_embeds=emb, attention_mask=mask, use_cache=True)
        seqs: list[list[int]] = [[] for _ in range(B)]
        rows: list[list[torch.Tensor]] = [[] for _ in range(B)]
        done = [False] * B
        for _ in range(max_new):
            logits = head(out.last_hidden_state[:, -1])
            toks = logits.argmax(-1)
            for b in range(B):
                if not done[b]:
                    seqs[b].append(int(toks[b]))
                    rows[b].append(logits[b])
                    done[b] = int(toks[b]) in self.eos
            if all(done):
                break
            mask = torch.cat([mask, mask.new_ones(B, 1)], dim=1)
            out = lm(inputs_embeds=self.model.get_input_embeddings()(toks[:, None]), attention_mask=mask,
                     use_cache=True, **_cache_kwarg(out))
        res = []
        for seq, rr in zip(seqs, rows):
            keep = max(len(seq) - 1 if seq and seq[-1] in self.eos else len(seq), 1)
            text = self.tok.decode([t for t in seq[:keep] if t not in self.eos], skip_special_tokens=True).strip()
            res.append(Decoded(seq[:keep], torch.stack(rr[:keep]).float().numpy(), text))
        return res

    @torch.inference_mode()
    def first_image_attention(self, emb: torch.Tensor, first_image_pos: int) -> np.ndarray:
        """(B, grid, grid) head-averaged attention from the last position to image 0 at the settings' layer."""
        layer = self.settings.attention_layer
        if layer is None:
            raise ValueError("edgevlm.json must name attention_layer")
        self.model.set_attn_implementation({"text_config": "eager"})
        try:
            out = self.model.model.language_model(inputs_embeds=emb, output_attentions=True, use_cache=False)
        finally:
            self.model.set_attn_implementation({"text_config": "sdpa"})
        w = out.attentions[layer][:, :, -1, first_image_pos:first_image_pos + self.n_img].float().mean(1)
        return w.reshape(-1, self.grid, self.grid).numpy().astype(np.float64)

    def relative_attention(self, feats: torch.Tensor, question: str) -> np.ndarray:
        """(B, grid, grid) relative attention (question / generic) on each row's single image."""
        st = self.settings
        maps = []
        for text in (question + st.question_suffix, st.generic_prompt):
            ids = self.prompt_ids(1, text)
            first = ids.index(self.image_token_id)
            maps.append(self.first_image_attention(self.embeds(ids, feats[:, None]), first))
        return maps[0] / (maps[1] + st.attention_eps)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _f32(values) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float32)]


def sample_row(run: TinyLlavaRunner, original: Image.Image, sample_id: str, question: str, answers: Sequence[str],
               question_type: str | None, gt_box=None, qualities: Sequence[int] = QUALITIES, hd_grid: int = 2,
               scoring: str = "auto", ratios=DEFAULT_RATIOS) -> dict[str, Any]:
    """One trace-v2 row: every pass at every quality (see the module docstring)."""
    original = to_rgb(original)
    w, h = original.size
    px, st, nq = run.px, run.settings, len(qualities)
    q_text = question + st.question_suffix
    score = lambda text: float(score_answer(text, answers, scoring))  # noqa: E731
    global_img = original.resize((px, px), RESAMPLE)
    g_jpg = [jpeg_encode(global_img, q) for q in qualities]
    g_seen = [decode(b) for b in g_jpg]
    # stage 1 at every quality + the edge's uncompressed view (last row)
    fg = run.features(g_seen + [global_img])
    ids1 = run.prompt_ids(1, q_text)
    s1 = run.greedy(run.embeds(ids1, fg[:, None]))
    rel = run.relative_attention(fg[:nq], question)
    boxes = [search_box(rel[k], w, h, px, ratios=ratios, **st.box_kwargs()) for k in range(nq)]
    l_jpg = [jpeg_encode(original.crop(b.as_tuple()).resize((px, px), RESAMPLE), q) for b, q in zip(boxes, qualities)]
    fl = run.features([decode(b) for b in l_jpg])
    ids2 = run.prompt_ids(2, q_text)
    s2 = run.greedy(run.embeds(ids2, torch.stack([fg[:nq], fl], 1)))
    unc = [token_uncertainty(d.logits) for d in s1[:nq]]
    row: dict[str, Any] = {
        "sample_id": sample_id, "question_type": question_type, "image_w": w, "image_h": h,
        "prompt_tokens": int(len(ids1) - run.n_img),
        "global_jpeg_bytes": [len(b) for b in g_jpg], "local_jpeg_bytes": [len(b) for b in l_jpg],
        "s1_answer_q": [d.text for d in s1[:nq]], "s1_score_q": [score(d.text) for d in s1[:nq]],
        "s1_min_entropy_q": [_f32(u[0]) for u in unc], "s1_shannon_q": [_f32(u[1]) for u in unc],
        "s1_margin_q": [_f32(u[2]) for u in unc],
        "bbox_x0_q": [b.x0 for b in boxes], "bbox_y0_q": [b.y0 for b in boxes],
        "bbox_x1_q": [b.x1 for b in boxes], "bbox_y1_q": [b.y1 for b in boxes],
        "s2_answer_q": [d.text for d in s2], "s2_score_q": [score(d.text) for d in s2],
        "s2_tokens_q": [len(d.tokens) for d in s2],
        "edge_score": score(s1[nq].text),
    }
    if gt_box is not None:
        obox = box_around(gt_box, w, h, px, pad_px=st.box_pad_px, pad_frac=st.box_pad_frac)
        oracle = original.crop(obox.as_tuple()).resize((px, px), RESAMPLE)
        fo = run.features([decode(jpeg_encode(oracle, q)) for q in qualities])
        so = run.greedy(run.embeds(ids2, torch.stack([fg[:nq], fo], 1)))
        x0, y0, x1, y1 = gt_box
        row.update({"s2_oracle_score_q": [score(d.text) for d in so], "gt_x0": int(np.floor(x0)),
                    "gt_y0": int(np.floor(y0)), "gt_x1": int(np.ceil(x1)), "gt_y1": int(np.ceil(y1))})
    o_jpg = [jpeg_encode(original, q) for q in qualities]
    row["original_jpeg_bytes"] = [len(b) for b in o_jpg]
    if hd_grid:
        tiles = hd_boxes(hd_grid, w, h)
        imgs = []
        for b in o_jpg:
            o = decode(b)
            imgs.append(o.resize((px, px), RESAMPLE))
            imgs.extend(o.crop(t).resize((px, px), RESAMPLE) for t in tiles)
        n = 1 + len(tiles)
        fh = run.features(imgs).reshape(nq, n, run.n_img, -1)
        shd = run.greedy(run.embeds(run.prompt_ids(n, q_text), fh))
        row.update({"hd_answer_q": [d.text for d in shd], "hd_score_q": [score(d.text) for d in shd],
                    "hd_visual_tokens": n * run.n_img, "hd_tiles": n})
    return row
