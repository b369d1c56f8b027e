"""Staged training of the tiny scene-text LLaVA on this CPU; reproduces the shipped weights.

Plain end-to-end training from scratch learned nothing in 15 CPU minutes (issue 12), so:
- Stage A trains the CLIP tower alone with linear per-patch heads: colour, kind, side (the position
  head) and digit (character position x digit; on global views only for fonts readable at 64 px,
  on crops for every legible sign), plus a code head on the crop's CLS token.
- Stage B trains projector + LM (lr 1e-3) with the tower at 2e-4, keeps the Stage A heads as
  auxiliary losses, and adds the attention-grounding loss at one LM layer: the head-averaged
  attention from the last prompt position to the global image tokens, renormalised, with
  -log(mass on the named object's patches). The generic prompt's attention is pulled towards
  uniform, so that relative attention (question / generic) is peaked on the named object.
- Stage-2 sequences (global + crop) use crops drawn from the padded box-search distribution and
  ground-truth crops, so the model reads crops of the size the pipeline will hand it.

- v2 (``--geometry v2 --warm-from <v1 checkpoint>``): the 336-px, patch-42 model warm-started from v1
  (models.tiny.model.warm_start) is fine-tuned with Stage C's losses on 1024-px scenes, stage-2 crops
  from the v2 box geometry, HD rows (global view + 2x2 tiles of the original in one prompt) and a
  per-row JPEG round trip at a random quality (the trace runs every quality).

CLI: ``python -m edgevlm.models.tiny.train --out models/weights/tiny-scenetext-v1 --seed 1``
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
import io
from PIL import Image

os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", "33554432")

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as tmp
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm
from transformers import LlavaForConditionalGeneration

from edgevlm.models import scenes as S
from edgevlm.models.tiny import data as D
from edgevlm.models.tiny import model as M

HELDOUT_SEED = 999
#: JPEG qualities of the training-time round trip (--jpeg-aug): the trace's qualities below 100.
AUG_QUALITIES = (5, 10, 25, 50, 75, 95)
QT_PROBS = {"text": 0.45, "color": 0.30, "position": 0.25}
COLOR_NAMES = list(S.COLORS)
KIND_NAMES = {v: k for k, v in D.KIND_IDS.items()}


class Heads(nn.Module):
    """Linear probes on the tower's per-patch features (Stage A; auxiliary in Stage B)."""

    def __init__(self, h=M.HIDDEN):
        super().__init__()
        self.color = nn.Linear(h, D.N_COLORS + 1)
        self.kind = nn.Linear(h, len(D.KIND_IDS) + 1)
        self.side = nn.Linear(h, 3)
        self.digit = nn.Linear(h, D.N_DIGIT_CLASSES)
        self.code = nn.Linear(h, S.CODE_LEN * 10)

    def loss(self, feats, cls, lab, code=None, code_mask=None):
        """feats (N,64,h), lab (N,4,8,8): summed CE of the per-patch heads (+ code head on cls)."""
        lab = lab.flatten(2)  # (N,4,64)
        dw = torch.ones(D.N_DIGIT_CLASSES)
        dw[0] = 0.2
        loss = (F.cross_entropy(self.color(feats).transpose(1, 2), lab[:, 0])
                + F.cross_entropy(self.kind(feats).transpose(1, 2), lab[:, 1]))
        if (lab[:, 2] > 0).any():
            loss = loss + F.cross_entropy(self.side(feats).transpose(1, 2), lab[:, 2], ignore_index=0)
        loss = loss + 2.0 * F.cross_entropy(self.digit(feats).transpose(1, 2), lab[:, 3], weight=dw)
        if code is not None and code_mask.any():
            logits = self.code(cls[code_mask]).view(-1, S.CODE_LEN, 10)
            loss = loss + F.cross_entropy(logits.reshape(-1, 10), code[code_mask].reshape(-1))
        return loss


def to_pixels(u8: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(u8).float().permute(0, 3, 1, 2) / 255.0
    return (x - 0.5) / 0.5


def tower(model, pix):
    """(patch features (N,64,h), cls (N,h)) exactly as LlavaModel.get_image_features selects them."""
    out = model.model.vision_tower(pix, output_hidden_states=True)
    hs = out.hidden_states[model.config.vision_feature_layer]
    return hs[:, 1:], hs[:, 0]


class Batcher:
    """Draws Stage A/B batches from the pool with a seeded generator."""

    def __init__(self, pool: D.Pool, tok, seed: int, jpeg_aug: float = 0.0):
        self.p, self.tok, self.rng = pool, tok, np.random.default_rng(seed)
        self.jpeg_aug = jpeg_aug
        self.qt_probs = dict(QT_PROBS)
        self.crops_of: dict[tuple[int, int], list[int]] = {}
        self.random_crops: dict[int, int] = {}
        for j, (si, slot, kind, _) in enumerate(pool.cmeta):
            if kind == 4:
                self.random_crops[int(si)] = j
            else:
                self.crops_of.setdefault((int(si), int(slot)), []).append(j)
        self.tok_cache: dict[str, list[int]] = {}

    def ids(self, s: str) -> list[int]:
        if s not in self.tok_cache:
            self.tok_cache[s] = self.tok(s, add_special_tokens=False).input_ids
        return self.tok_cache[s]

    def stage_a(self, b, b_crops=None):
        b_crops = b if b_crops is None else b_crops
        gi = self.rng.integers(len(self.p), size=b)
        ci = self.rng.integers(len(self.p.crops), size=b_crops)
        code = np.full((b_crops, S.CODE_LEN), 0)
        cmask = np.zeros(b_crops, bool)
        for k, j in enumerate(ci):
            si, slot, kind, inside = self.p.cmeta[j]
            if slot >= 0 and inside and self.p.objs[si, slot, 1] == D.KIND_IDS["sign"]:
                code[k] = self.p.objs[si, slot, 8:11]
                cmask[k] = True
        return (to_pixels(self.p.glob[gi]), torch.from_numpy(self.p.glab[gi]),
                to_pixels(self.p.crops[ci]), torch.from_numpy(self.p.clab[ci]),
                torch.from_numpy(code), torch.from_numpy(cmask))

    def question(self, si):
        """(question, answer, slot) for a random question type about scene si."""
        objs = self.p.objs[si]
        signs = [k for k in range(D.MAX_OBJ) if objs[k, 0] and objs[k, 1] == D.KIND_IDS["sign"]]
        shapes = [k for k in range(D.MAX_OBJ) if objs[k, 0] and objs[k, 1] != D.KIND_IDS["sign"]]
        qt = self.rng.choice(list(self.qt_probs), p=list(self.qt_probs.values()))
        if qt == "color" and shapes:
            k = int(self.rng.choice(shapes))
            return "color", f"what color is the {KIND_NAMES[objs[k, 1]]}?", COLOR_NAMES[objs[k, 2] - 1], k
        k = int(self.rng.choice(signs))
        col = COLOR_NAMES[objs[k, 2] - 1]
        if qt == "position":
            return "position", f"which side is the {col} sign on?", S.SIDES[objs[k, 3] - 1], k
        return "text", f"what is written on the {col} sign?", "".join(str(d) for d in objs[k, 8:11]), k

    def round_trip(self, imgs):
        """With probability jpeg_aug, the row's images after a JPEG round trip at one random quality."""
        if not self.jpeg_aug or self.rng.random() >= self.jpeg_aug:
            return imgs
        q = int(self.rng.choice(AUG_QUALITIES))
        out = []
        for a in imgs:
            b = io.BytesIO()
            Image.fromarray(a).save(b, format="JPEG", quality=q)
            with Image.open(io.BytesIO(b.getvalue())) as im:
                out.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
        return out

    def stage_b(self, b, two_images: bool, n_generic: int = 0, hd: bool = False):
        """Token ids, labels, pixel values (global[, crop] per row), grounding masks, question types.

        hd=True: HD rows, the global view followed by the scene's HD tiles (pool.tiles) in one prompt.
        """
        rows, pix, gmask, qtypes, readable = [], [], [], [], []
        for _ in range(b):
            si = int(self.rng.integers(len(self.p)))
            qt, q, a, slot = self.question(si)
            imgs = [self.p.glob[si]]
            if hd:
                nt = len(self.p.tiles) // len(self.p)
                imgs.extend(self.p.tiles[np.arange(si * nt, (si + 1) * nt)])
            elif two_images:
                cands = self.crops_of.get((si, slot), [])
                if self.rng.random() < 0.1 or not cands:
                    j = self.random_crops[si]
                else:
                    kinds = np.array([self.p.cmeta[c, 2] for c in cands])
                    w = np.where(kinds == 0, 0.6 / max(1, (kinds == 0).sum()), 0.2)
                    j = int(self.rng.choice(cands, p=w / w.sum()))
                imgs.append(self.p.crops[j])
            imgs = self.round_trip(imgs)
            prompt = M.PROMPT_TEMPLATE.format(images="<image>" * len(imgs), question=q)
            rows.append((self.ids(prompt), self.ids(a) + [self.tok.eos_token_id]))
            pix.extend(imgs)
            gmask.append(self.p.omask[si, slot].reshape(-1))
            qtypes.append(qt)
            readable.append(bool(self.p.objs[si, slot, 11]))
        for _ in range(n_generic):
            si = int(self.rng.integers(len(self.p)))
            rows.append((self.ids(M.PROMPT_TEMPLATE.format(images="<image>", question=M.GENERIC_PROMPT)), []))
            pix.extend(self.round_trip([self.p.glob[si]]))
        T = max(len(p) + len(a) for p, a in rows)
        ids = torch.full((len(rows), T), self.tok.pad_token_id)
        lab = torch.full((len(rows), T), -100)
        am = torch.zeros((len(rows), T), dtype=torch.long)
        last = torch.zeros(len(rows), dtype=torch.long)
        for r, (p, a) in enumerate(rows):
            seq = p + a
            ids[r, :len(seq)] = torch.tensor(seq)
            am[r, :len(seq)] = 1
            if a:
                lab[r, len(p) - 1:len(seq) - 1] = torch.tensor(a)
            last[r] = len(p) - 1
        return ids, lab, am, last, to_pixels(np.stack(pix)), torch.from_numpy(np.stack(gmask)), qtypes, readable


def expand_image_tokens(ids, am, lab, image_token_id, n_tok=M.TOKENS_PER_IMAGE):
    """Repeat each <image> token n_tok times, as LlavaProcessor does."""
    out_ids, out_am, out_lab, shift = [], [], [], []
    for r in range(ids.shape[0]):
        reps = torch.where(ids[r] == image_token_id, n_tok, 1)
        out_ids.append(torch.repeat_interleave(ids[r], reps))
        out_am.append(torch.repeat_interleave(am[r], reps))
        out_lab.append(torch.repeat_interleave(lab[r], reps))
        shift.append(int((reps - 1).sum()))
    return torch.stack(out_ids), torch.stack(out_am), torch.stack(out_lab), torch.tensor(shift)


def lm_forward(model, ids, am, pix, want_attn_layer=None, tower_grad=True):
    """Manual LlavaForConditionalGeneration forward (same maths) that also returns tower features."""
    with torch.set_grad_enabled(tower_grad and torch.is_grad_enabled()):
        feats, cls = tower(model, pix)
    img = model.model.multi_modal_projector(feats)
    emb = model.get_input_embeddings()(ids)
    m = (ids == model.config.image_token_id).unsqueeze(-1)
    emb = emb.masked_scatter(m, img.reshape(-1, img.shape[-1]).to(emb.dtype))
    out = model.model.language_model(inputs_embeds=emb, attention_mask=am,
                                     output_attentions=want_attn_layer is not None)
    logits = model.lm_head(out.last_hidden_state)
    attn = out.attentions[want_attn_layer] if want_attn_layer is not None else None
    return logits, feats, cls, attn


def image_positions(ids, image_token_id):
    """Index of the first image token per row (the global image's 64 tokens start there)."""
    return (ids == image_token_id).float().argmax(1)


def grounding_loss(attn, ids, last, image_token_id, gmask):
    """-log of the renormalised head-averaged attention mass on the object's global patches."""
    a = attn.mean(1)  # (B,T,T)
    start = image_positions(ids, image_token_id)
    rows = torch.arange(ids.shape[0])
    idx = start[:, None] + torch.arange(M.TOKENS_PER_IMAGE)[None, :]
    w = a[rows[:, None], last[:, None], idx]  # (B,64)
    w = w / (w.sum(1, keepdim=True) + 1e-9)
    mass = (w * gmask.float()).sum(1)
    return -torch.log(mass + 1e-6).mean(), mass.detach(), w


def answer_stats(logits, lab):
    """Per-row exact-match under teacher forcing (= greedy exact match) and mean token CE."""
    pred = logits.argmax(-1)
    ok = ((pred == lab) | (lab == -100)).all(1)
    return ok


def set_threads(n: int = 2):
    torch.set_num_threads(n)
    torch.set_flush_denormal(True)


def cosine(step, total, warm=50):
    if step < warm:
        return (step + 1) / warm
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def train(out: Path, seed: int, pool_paths, heldout_paths, steps_a: int, steps_b: int, batch: int,
          log_every: int = 50, minutes_b: float | None = None, pool_paths_b=None, threads: int = 2,
          rank: int = 0, world: int = 1, stage_a_ckpt=None, reuse_stage_a: bool = False,
          steps_c: int = 0, text_share_c: float = 0.7, init_from=None, geo: D.Geometry = D.V1,
          warm_from=None, hd_rows: int = 0, jpeg_aug: float = 0.0, eval_every: int = 80,
          stop_after: int | None = None, lr_lm_c: float | None = None, lr_tower_c: float | None = None) -> dict:
    """Stage A on pool_paths, Stage B on pool_paths_b (a callable giving the shard paths; default: the same).

    With world > 1 each process draws its own data (seed + 100*rank) and gradients are averaged
    (data parallel over processes; `batch` is the global batch). Rank 0 logs, evaluates and saves.
    """
    set_threads(threads)
    lead = rank == 0
    gbatch, batch = batch, batch // world
    t0 = time.time()
    pool = D.load_pools(pool_paths)
    held = D.load_pools(heldout_paths) if heldout_paths else None
    model, proc = M.build_model(seed, geo.px, geo.px // geo.grid)
    if init_from is not None:  # a saved checkpoint after Stage B: skip Stages A and B
        model = LlavaForConditionalGeneration.from_pretrained(init_from)
        steps_a = steps_b = 0
    elif warm_from is not None:  # v1 weights with the patch kernel resized to this geometry
        model, proc = M.warm_start(warm_from, geo.px, geo.px // geo.grid, seed)
        steps_a = steps_b = 0
    model.set_attn_implementation("eager")
    tok = proc.tokenizer
    itok = proc.image_token_id
    heads = Heads()
    torch.manual_seed(seed)
    bat = Batcher(pool, tok, seed + 100 * rank, jpeg_aug)
    hbat = Batcher(held, tok, seed + 1) if held is not None else None
    log = {"geometry": {k: (v.name if isinstance(v, S.SceneSpec) else v) for k, v in geo.__dict__.items()},
           "warm_from": str(warm_from) if warm_from else None, "hd_rows": hd_rows, "jpeg_aug": jpeg_aug,
           "jpeg_aug_qualities": list(AUG_QUALITIES) if jpeg_aug else None, "threads": threads, "seed": seed, "pool_scenes": len(pool), "pool_crops": len(pool.crops), "steps_a": steps_a,
           "steps_b": steps_b, "steps_c": steps_c, "text_share_c": text_share_c, "init_from": init_from,
           "batch": gbatch, "processes": world, "history": []}
    params = list(model.parameters()) + list(heads.parameters())

    def sync_grads():
        if world == 1:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= world
        o = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[o:o + n].view_as(p))
            o += n
    vt = model.model.vision_tower
    # ---- Stage A: tower + heads -------------------------------------------------------------
    opt = torch.optim.AdamW(list(vt.parameters()) + list(heads.parameters()), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine(s, steps_a))
    model.train()
    if reuse_stage_a and stage_a_ckpt is not None and Path(stage_a_ckpt).exists():
        st = torch.load(stage_a_ckpt)
        model.load_state_dict(st["model"])
        heads.load_state_dict(st["heads"])
        steps_run_a = 0
    else:
        steps_run_a = steps_a
    bar = tqdm(range(steps_run_a), desc="stage A (tower)", mininterval=5, disable=not lead)
    for step in bar:
        g, gl, c, cl, code, cm = bat.stage_a(batch * 2 // 3, batch * 4 // 3)
        fg, clsg = tower(model, g)
        fc, clsc = tower(model, c)
        loss = heads.loss(fg, clsg, gl) + heads.loss(fc, clsc, cl, code, cm)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sync_grads()
        opt.step()
        sched.step()
        if step % log_every == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
            log["history"].append({"stage": "A", "step": step, "loss": loss.item(), "t_s": time.time() - t0})
    log["stage_a_s"] = time.time() - t0
    if lead and stage_a_ckpt is not None and steps_run_a:
        Path(stage_a_ckpt).parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "heads": heads.state_dict()}, stage_a_ckpt)
    if hbat is not None and lead and steps_a:
        log["stage_a_probe"] = probe_heads(model, heads, hbat)
        print("stage A probe:", json.dumps(log["stage_a_probe"]), flush=True)
    # ---- Stage B: projector + LM, tower slower, aux heads, grounding -----------------------
    if pool_paths_b is not None:
        paths_b = pool_paths_b()
        pool = D.load_pools(paths_b)
        bat = Batcher(pool, tok, seed + 2 + 100 * rank, jpeg_aug)
        log["pool_scenes_b"] = len(pool)
    lm_params = list(model.model.multi_modal_projector.parameters()) + list(
        model.model.language_model.parameters()) + list(model.lm_head.parameters())
    n_gen = max(1, batch // 8)

    def stage(tag: str, steps: int, lr_lm: float, lr_tower: float, use_aux: bool) -> None:
        """Stage B (and C): answer CE on stage-1 and stage-2 rows, grounding, generic-uniform, aux heads."""
        opt = torch.optim.AdamW([{"params": lm_params, "lr": lr_lm},
                                 {"params": list(vt.parameters()), "lr": lr_tower},
                                 {"params": list(heads.parameters()), "lr": 5e-4}], weight_decay=0.01)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine(s, steps, warm=min(100, steps // 10)))
        tb = time.time()
        bar = tqdm(range(steps), desc=f"stage {tag}", mininterval=5, disable=not lead)
        for step in bar:
            half = batch // 2
            # stage-1 format rows (global only) with grounding and generic rows
            ids, lab, am, last, pix, gmask, qts, _ = bat.stage_b(half, False, n_generic=n_gen)
            ids, am, lab, shift = expand_image_tokens(ids, am, lab, itok)
            last = last + shift
            logits, feats, cls, attn = lm_forward(model, ids, am, pix, M.ATTENTION_LAYER)
            ce1 = F.cross_entropy(logits[:half].reshape(-1, logits.shape[-1]), lab[:half].reshape(-1),
                                  ignore_index=-100)
            gl, mass, _ = grounding_loss(attn[:half], ids[:half], last[:half], itok, gmask)
            _, _, wg = grounding_loss(attn[half:], ids[half:], last[half:], itok,
                                      torch.ones(n_gen, M.TOKENS_PER_IMAGE, dtype=torch.bool))
            uni = -(torch.log(wg * M.TOKENS_PER_IMAGE + 1e-6)).mean()
            # stage-2 format rows (global + crop)
            ids2, lab2, am2, last2, pix2, _, _, _ = bat.stage_b(half, True)
            ids2, am2, lab2, _ = expand_image_tokens(ids2, am2, lab2, itok)
            logits2, feats2, cls2, _ = lm_forward(model, ids2, am2, pix2)
            ce2 = F.cross_entropy(logits2.reshape(-1, logits2.shape[-1]), lab2.reshape(-1), ignore_index=-100)
            # HD rows (global + tiles in one prompt): answer cross-entropy only
            if hd_rows:
                ids3, lab3, am3, _, pix3, _, _, _ = bat.stage_b(hd_rows, False, hd=True)
                ids3, am3, lab3, _ = expand_image_tokens(ids3, am3, lab3, itok)
                logits3, _, _, _ = lm_forward(model, ids3, am3, pix3)
                ce3 = F.cross_entropy(logits3.reshape(-1, logits3.shape[-1]), lab3.reshape(-1), ignore_index=-100)
            else:
                ce3 = torch.zeros(())
            # auxiliary heads on a fresh Stage A batch (keeps per-patch reading alive)
            if use_aux and step % 3 == 0:
                g, glab, c, clab, code, cm = bat.stage_a(batch // 3)
                fg, clsg = tower(model, g)
                fc, clsc = tower(model, c)
                aux = heads.loss(fg, clsg, glab) + heads.loss(fc, clsc, clab, code, cm)
            else:
                aux = torch.zeros(())
            loss = ce1 + ce2 + 0.5 * gl + 0.2 * uni + 0.3 * aux + ce3
            opt.zero_grad(set_to_none=True)
            loss.backward()
            sync_grads()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if step % log_every == 0 and lead:
                rec = {"stage": tag, "step": step, "ce1": ce1.item(), "ce2": ce2.item(), "ce_hd": ce3.item(),
                       "ground": gl.item(),
                       "mass": mass.mean().item(), "uni": uni.item(), "aux": float(aux), "t_s": time.time() - t0}
                log["history"].append(rec)
                bar.set_postfix(ce1=f"{rec['ce1']:.2f}", ce2=f"{rec['ce2']:.2f}", mass=f"{rec['mass']:.2f}")
            if lead and ((step + 1) % eval_every == 0 or step == steps - 1):
                if hbat is not None:
                    ev = quick_eval(model, hbat, itok, hd=bool(hd_rows))
                    ev["stage"], ev["step"] = tag, step + 1
                    log.setdefault("evals", []).append(ev)
                    print(f"\nstage {tag} step {step + 1}: {json.dumps(ev)}", flush=True)
                save(model, proc, out, log, time.time() - t0, geo)
                model.train()
            if stop_after is not None and step + 1 >= stop_after:
                print(f"\nstage {tag} stopped after {step + 1} of {steps} scheduled steps (--stop-after)", flush=True)
                log[f"steps_{tag.lower()}_done"] = step + 1
                break
            if minutes_b is not None and time.time() - tb > 60 * minutes_b:
                print(f"\nstage {tag} time budget {minutes_b} min reached at step {step + 1}", flush=True)
                log[f"steps_{tag.lower()}_done"] = step + 1
                break

    # ---- Stage B: projector + LM, tower slower, aux heads, grounding -----------------------
    if steps_b:
        stage("B", steps_b, 1e-3, 4e-4, use_aux=True)
    log["stage_b_end_s"] = time.time() - t0
    # ---- Stage C: the same losses with text questions in the majority ------------------------
    # In Stage B's mix (45 % text, over three exact digits) the LM learned colour and position but
    # not to read codes (per-digit accuracy at chance after 2400 steps); a text-only probe learned
    # digits within 200 steps, so Stage C shifts the mix towards text and keeps the other types.
    if steps_c:
        rest = (1.0 - text_share_c) / (1.0 - QT_PROBS["text"])
        mix = {q: (text_share_c if q == "text" else p * rest) for q, p in QT_PROBS.items()}
        bat.qt_probs = mix
        log["qt_probs_c"] = mix
        # A warm start fine-tunes a converged model: half the LM rate.
        if lead and warm_from is not None and hbat is not None:   # the warm start's own score, the bar to beat
            ev = quick_eval(model, hbat, itok, hd=bool(hd_rows))
            ev["stage"], ev["step"] = "C", 0
            log.setdefault("evals", []).append(ev)
            print(f"\nstage C step 0 (warm start): {json.dumps(ev)}", flush=True)
            model.train()
        lr_lm = lr_lm_c if lr_lm_c is not None else (5e-4 if warm_from is not None else 1e-3)
        lr_tower = lr_tower_c if lr_tower_c is not None else 2e-4
        log["lr_c"] = {"lm": lr_lm, "tower": lr_tower}
        stage("C", steps_c, lr_lm, lr_tower, use_aux=init_from is None and warm_from is None)
    log["wall_s"] = time.time() - t0
    if lead:
        save(model, proc, out, log, log["wall_s"], geo)
    return log


@torch.no_grad()
def probe_heads(model, heads, hbat, n=128):
    model.eval()
    g, gl, c, cl, code, cm = hbat.stage_a(n)
    fg, _ = tower(model, g)
    fc, clsc = tower(model, c)
    res = {}
    for name, f, lab in (("global", fg, gl), ("crop", fc, cl)):
        lab = lab.flatten(2)
        for i, h in enumerate(("color", "kind", "side", "digit")):
            m = lab[:, i] > 0
            if m.any():
                pred = getattr(heads, h)(f).argmax(-1)
                res[f"{name}_{h}_acc"] = round((pred[m] == lab[:, i][m]).float().mean().item(), 3)
    if cm.any():
        pred = heads.code(clsc[cm]).view(-1, S.CODE_LEN, 10).argmax(-1)
        res["crop_code_acc"] = round((pred == code[cm]).all(1).float().mean().item(), 3)
    model.train()
    return res


@torch.no_grad()
def quick_eval(model, hbat, itok, n=120, hd: bool = False):
    """Teacher-forced exact match (= greedy exact match) per question type on held-out pool scenes."""
    model.eval()
    res = {}
    for two in (False, True) + (("hd",) if hd else ()):
        ids, lab, am, last, pix, gmask, qts, readable = hbat.stage_b(n, bool(two), hd=two == "hd")
        ids, am, lab, shift = expand_image_tokens(ids, am, lab, itok)
        logits, _, _, attn = lm_forward(model, ids, am, pix, None if two else M.ATTENTION_LAYER)
        ok = answer_stats(logits, lab)
        tag = "hd" if two == "hd" else "s2" if two else "s1"
        for qt in QT_PROBS:
            m = torch.tensor([q == qt for q in qts])
            if m.any():
                res[f"{tag}_{qt}"] = round(ok[m].float().mean().item(), 3)
        mt = torch.tensor([q == "text" for q in qts]) & torch.tensor(readable)
        if mt.any():
            res[f"{tag}_text_readable"] = round(ok[mt].float().mean().item(), 3)
        if not two:
            _, mass, _ = grounding_loss(attn, ids, last + shift, itok, gmask)
            res["s1_ground_mass"] = round(mass.mean().item(), 3)
    return res


def save(model, proc, out: Path, log: dict, wall_s: float, geo: D.Geometry = D.V1):
    model_id = M.MODEL_ID if geo == D.V1 else "tiny-scenetext-v2"
    M.save_checkpoint(model, proc, out, M.edgevlm_settings(geo.box_pad_px, geo.box_grow, geo.box_grow_min_cells,
                                                           model_id=model_id, px=geo.px))
    log = dict(log, wall_s_so_far=wall_s)
    (out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgevlm.models.tiny.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="checkpoint directory to write")
    ap.add_argument("--seed", type=int, default=1, help="training seed (scene pool seed and init; default 1)")
    ap.add_argument("--pool-dir", default="runs/pool", help="where pool shards are cached (default runs/pool)")
    ap.add_argument("--pool-scenes", type=int, default=2000,
                    help="training scenes rendered (default 2000; Stage A uses the first 1000)")
    ap.add_argument("--wait-for-pool", action="store_true",
                    help="wait for pool shards that another process (python -m edgevlm.models.tiny.data) is rendering")
    ap.add_argument("--steps-a", type=int, default=350, help="Stage A steps (default 350)")
    ap.add_argument("--steps-b", type=int, default=550, help="Stage B steps (default 550)")
    ap.add_argument("--batch", type=int, default=24, help="batch size (default 24)")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads (default 2; on a CPU shared with other jobs 1 avoids OpenMP spin-waits)")
    ap.add_argument("--procs", type=int, default=1,
                    help="data-parallel training processes (gradients averaged; default 1)")
    ap.add_argument("--stage-a-ckpt", default="runs/train/stage_a.pt", help="where the Stage A weights are saved")
    ap.add_argument("--reuse-stage-a", action="store_true", help="load --stage-a-ckpt and skip Stage A")
    ap.add_argument("--minutes-b", type=float, default=None, help="stop Stage B (and C) after this many minutes")
    ap.add_argument("--steps-c", type=int, default=0,
                    help="Stage C steps: Stage B's losses with text questions in the majority (default 0)")
    ap.add_argument("--text-share-c", type=float, default=0.7, help="share of text questions in Stage C (default 0.7)")
    ap.add_argument("--init-from", help="start from this saved checkpoint (after Stage B) and run Stage C only")
    ap.add_argument("--geometry", choices=sorted(D.GEOMETRIES), default="v1",
                    help="scene/input geometry: v1 (768-px scenes, 64-px input) or v2 (1024 px, 336 px; default v1)")
    ap.add_argument("--warm-from", help="a v1 checkpoint: warm-start this geometry's model from it "
                    "(patch kernel resized) and run Stage C only")
    ap.add_argument("--hd-rows", type=int, default=0, help="HD rows (global + tiles) per step (default 0)")
    ap.add_argument("--eval-every", type=int, default=80, help="held-out evaluation every N steps (default 80)")
    ap.add_argument("--stop-after", type=int, default=None,
                    help="stop Stage B/C after this many steps of the scheduled --steps-* (the LR schedule is unchanged)")
    ap.add_argument("--jpeg-aug", type=float, default=0.0,
                    help="share of rows whose images take a JPEG round trip at a random quality (default 0)")
    ap.add_argument("--lr-lm-c", type=float, default=None,
                    help="Stage C peak LR of projector + LM (default 5e-4 on a warm start, else 1e-3)")
    ap.add_argument("--lr-tower-c", type=float, default=None, help="Stage C peak LR of the vision tower (default 2e-4)")
    a = ap.parse_args(argv)
    geo = D.GEOMETRIES[a.geometry]
    if a.hd_rows and not geo.hd_grid:
        ap.error("--hd-rows needs a geometry with HD tiles (--geometry v2)")
    if a.pool_dir == "runs/pool" and a.geometry != "v1":
        a.pool_dir = f"runs/pool-{a.geometry}"
    pool_dir = Path(a.pool_dir)
    pool_dir.mkdir(parents=True, exist_ok=True)
    n_shards = math.ceil(a.pool_scenes / D.SHARD)
    prefix = "" if a.seed == 1 else f"seed{a.seed}_"

    def shard(k):
        return D.ensure_shard(pool_dir / f"{prefix}shard{k}.npz", a.seed, k * D.SHARD, D.SHARD,
                              wait_s=1800 if a.wait_for_pool else 0, geo=geo)
    held = D.ensure_shard(pool_dir / "heldout.npz", HELDOUT_SEED, 0, 200, wait_s=1800 if a.wait_for_pool else 0,
                          geo=geo)
    shards_a = [shard(k) for k in range(min(2, n_shards))]
    wait_s = 1800 if a.wait_for_pool else 0
    specs_b = [(pool_dir / f"{prefix}shard{k}.npz", a.seed, k * D.SHARD, D.SHARD, wait_s, geo)
               for k in range(n_shards)]
    args = (Path(a.out), a.seed, shards_a, [held], a.steps_a, a.steps_b, a.batch, a.minutes_b,
            specs_b, a.threads, a.procs, a.stage_a_ckpt, a.reuse_stage_a, a.steps_c, a.text_share_c, a.init_from,
            geo, a.warm_from, a.hd_rows, a.jpeg_aug, a.eval_every, a.stop_after, a.lr_lm_c, a.lr_tower_c)
    if a.procs == 1:
        _run(0, *args)
    else:
        tmp.spawn(_run, args=args, nprocs=a.procs, join=True)
    return 0


def _run(rank, out, seed, shards_a, held, steps_a, steps_b, batch, minutes_b, specs_b, threads, world,
         stage_a_ckpt=None, reuse_stage_a=False, steps_c=0, text_share_c=0.7, init_from=None, geo=D.V1,
         warm_from=None, hd_rows=0, jpeg_aug=0.0, eval_every=80, stop_after=None, lr_lm_c=None, lr_tower_c=None):
    """One training process; Stage B shards are rendered here (or waited for) when Stage A ends."""
    if world > 1:
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29517", rank=rank, world_size=world)
    log = train(out, seed, shards_a, held, steps_a, steps_b, batch, minutes_b=minutes_b,
                pool_paths_b=lambda: [D.ensure_shard(*spec) for spec in specs_b], threads=threads,
                rank=rank, world=world, stage_a_ckpt=stage_a_ckpt, reuse_stage_a=reuse_stage_a,
                steps_c=steps_c, text_share_c=text_share_c, init_from=init_from, geo=geo, warm_from=warm_from,
                hd_rows=hd_rows, jpeg_aug=jpeg_aug, eval_every=eval_every, stop_after=stop_after,
                lr_lm_c=lr_lm_c, lr_tower_c=lr_tower_c)
    if rank == 0:
        print(json.dumps({k: v for k, v in log.items() if k != "history"}, indent=1), flush=True)


if __name__ == "__main__":
    sys.exit(main())
