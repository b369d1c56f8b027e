"""The warm-start safety net: does the 336-px model warm-started from v1 answer v1's held-out questions as v1 does?

Both models get the same held-out v1 scenes (seed 999), questions and crop boxes; v1 sees them at
64 px, the warm start (models.tiny.model.warm_start) at 336 px. Teacher-forced exact match per
question type, stage 1 (global) and stage 2 (global + crop), plus the grounding mass.

CLI: python -m edgevlm.models.tiny.warm_check --v1 models/weights/tiny-scenetext-v1 --n 200
     python -m edgevlm.models.tiny.warm_check --save models/weights/tiny-scenetext-v2   (writes the warm start
     as a checkpoint with the v2 geometry's backend settings; no check)
"""

from __future__ import annotations

import argparse
import json
import sys


def run(v1_dir: str, n_scenes: int = 200, n_questions: int = 240) -> dict:
    import torch  # defers torch
    from transformers import LlavaForConditionalGeneration  # defers transformers

    from edgevlm.models.tiny import data as D  # defers torch, PIL (the [models] extra)
    from edgevlm.models.tiny import model as M  # defers torch, PIL (the [models] extra)
    from edgevlm.models.tiny import train as T  # defers torch, PIL (the [models] extra)
    torch.set_num_threads(1)
    v1 = LlavaForConditionalGeneration.from_pretrained(v1_dir).eval()
    v1.set_attn_implementation("eager")
    v2, proc = M.warm_start(v1_dir)
    v2.eval().set_attn_implementation("eager")
    itok = proc.image_token_id
    out = {}
    for name, model, geo in (("v1_at_64", v1, D.V1), ("warm_start_at_336", v2, D.V1_AT_336)):
        pool = D.build_pool(T.HELDOUT_SEED, 0, n_scenes, progress=False, geo=geo)
        bat = T.Batcher(pool, proc.tokenizer, 12345)   # same seed: same questions and crops for both
        out[name] = T.quick_eval(model, bat, itok, n=n_questions)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgevlm.models.tiny.warm_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--v1", default="models/weights/tiny-scenetext-v1")
    ap.add_argument("--n", type=int, default=200, help="held-out scenes (default 200)")
    ap.add_argument("--save", help="write the warm-started v2 checkpoint here instead of checking")
    a = ap.parse_args(argv)
    if a.save:
        from edgevlm.models.tiny import data as D  # defers torch, PIL (the [models] extra)
        from edgevlm.models.tiny import model as M  # defers torch, PIL (the [models] extra)
        model, proc = M.warm_start(a.v1, D.V2.px, D.V2.px // D.V2.grid)
        g = D.V2
        M.save_checkpoint(model, proc, a.save, M.edgevlm_settings(g.box_pad_px, g.box_grow, g.box_grow_min_cells,
                                                                  model_id="tiny-scenetext-v2", px=g.px))
        print(f"wrote {a.save}")
        return 0
    print(json.dumps(run(a.v1, a.n), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
