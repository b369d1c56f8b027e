"""`nested_ae`: a small autoencoder trained with nested dropout, the learned alternative to PCA.

Tokens are centred and scaled by one RMS. Encoder z = A x + MLP_e(x), decoder x^ = B z + MLP_d(z),
each MLP one GELU(tanh) hidden layer. The latent is split into the same level groups as
`pca_levels`. Training uses nested dropout at the level boundaries (Rippel et al. 2014, "Learning
ordered representations with nested dropout"): the loss is the mean over l = 1..L of the MSE when
only the first l groups are kept (the exact expectation over a uniform truncation level), so every
prefix reconstructs as well as it can. Uniform noise of half a quantisation step per level is added
to z in training, so the decoder sees what it will get. A and B start at the PCA axes and the MLP
output layers at zero: training starts from the PCA codec (without its quantisation) and moves away
only where that lowers the loss.

Training uses torch (CPU, seconds to a minute); inference is plain numpy on the saved float32 weights.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np

from edgevlm.models.codec.base import QMAX, Codec, CodecError, check_group_sizes, doubling_sizes

_C = math.sqrt(2.0 / math.pi)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(_C * (x + 0.044715 * x ** 3)))


class NestedAE(Codec):
    kind = "nested_ae"

    def __init__(self, group_sizes: Sequence[int] | None = None, n_levels: int = 4, latent: int | None = None,
                 hidden: int | None = None, steps: int = 600, batch: int = 512, lr: float = 1e-3,
                 seed: int = 0):
        super().__init__(group_sizes, n_levels)
        for name, v in (("steps", steps), ("batch", batch)):
            if not isinstance(v, int) or v < 1:
                raise CodecError(f"nested_ae: '{name}' must be a positive integer, got {v!r}")
        if not lr > 0:
            raise CodecError(f"nested_ae: 'lr' must be positive, got {lr!r}")
        self.latent, self.hidden, self.steps, self.batch, self.lr, self.seed = latent, hidden, steps, batch, lr, seed
        self.w: dict[str, np.ndarray] = {}

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "latent": self.latent, "hidden": self.hidden, "steps": self.steps,
                "batch": self.batch, "lr": self.lr, "seed": self.seed}

    # ----- training -----------------------------------------------------------------------------
    def _fit(self, x: np.ndarray) -> None:
        import torch  # defers torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)          # small matmuls: one thread is fastest on a shared CPU
        try:
            self._train(x)
        finally:
            torch.set_num_threads(threads)

    def _train(self, x: np.ndarray) -> None:
        import torch  # defers torch

        n, d = x.shape
        width = self.latent or d
        if not 1 <= width <= d:
            raise CodecError(f"nested_ae: 'latent' must be in 1..{d}, got {self.latent}")
        self.group_sizes = (check_group_sizes(self.config_group_sizes, width) if self.config_group_sizes
                            else doubling_sizes(width, self.config_n_levels))
        k = sum(self.group_sizes)
        h = self.hidden or min(512, 2 * d)
        mean = x.mean(axis=0)
        xc = x - mean
        rms = float(np.sqrt((xc ** 2).mean())) or 1.0
        xn = xc / rms
        cov = xn.T @ xn / max(n - 1, 1)
        evals, evecs = np.linalg.eigh(cov)
        axes = evecs[:, np.argsort(evals)[::-1][:k]].T                 # (k, d)

        g = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        t = lambda a: torch.tensor(a, dtype=torch.float32)           # noqa: E731
        A = torch.nn.Parameter(t(axes.T.copy()))                      # x (.,d) @ A (d,k)
        B = torch.nn.Parameter(t(axes.copy()))                        # z (.,k) @ B (k,d)
        e1, d1 = torch.nn.Linear(d, h), torch.nn.Linear(k, h)
        e2, d2 = torch.nn.Linear(h, k), torch.nn.Linear(h, d)
        for lin in (e2, d2):
            torch.nn.init.zeros_(lin.weight)
            torch.nn.init.zeros_(lin.bias)
        act = torch.nn.GELU(approximate="tanh")
        params = [A, B, *e1.parameters(), *e2.parameters(), *d1.parameters(), *d2.parameters()]
        opt = torch.optim.Adam(params, lr=self.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.steps)
        bounds = np.cumsum(self.group_sizes)
        masks = torch.zeros(len(bounds), k)
        for i, b in enumerate(bounds):
            masks[i, :b] = 1.0
        starts = np.concatenate([[0], bounds[:-1]])
        data = t(xn)
        t0 = time.perf_counter()
        losses = []
        for step in range(self.steps):
            idx = torch.randint(0, n, (min(self.batch, n),), generator=g)
            xb = data[idx]
            z = xb @ A + e2(act(e1(xb)))
            # half a quantisation step of uniform noise per level (scale = max|z| / 127 over the batch)
            noise = torch.empty_like(z)
            for s, b in zip(starts, bounds):
                step_size = z[:, s:b].detach().abs().max() / QMAX
                noise[:, s:b] = (torch.rand(z.shape[0], b - s, generator=g) - 0.5) * step_size
            zq = z + noise
            zl = zq[None, :, :] * masks[:, None, :]                    # (L, batch, k): every prefix
            rec = zl @ B + d2(act(d1(zl)))
            loss = ((rec - xb[None]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        f = lambda p: p.detach().numpy().astype(np.float32)          # noqa: E731
        self.w = {"mean": mean.astype(np.float32), "rms": np.array([rms], dtype=np.float32),
                  "A": f(A), "B": f(B), "e1_w": f(e1.weight), "e1_b": f(e1.bias), "e2_w": f(e2.weight),
                  "e2_b": f(e2.bias), "d1_w": f(d1.weight), "d1_b": f(d1.bias), "d2_w": f(d2.weight),
                  "d2_b": f(d2.bias)}
        self.fit_info = {"train_s": round(time.perf_counter() - t0, 2), "hidden": h,
                         "loss_first": losses[0], "loss_last": float(np.mean(losses[-20:]))}

    # ----- numpy inference ----------------------------------------------------------------------
    def _analyse(self, x: np.ndarray) -> np.ndarray:
        w = self.w
        xn = (x - w["mean"]) / w["rms"][0]
        return xn @ w["A"] + _gelu(xn @ w["e1_w"].T + w["e1_b"]) @ w["e2_w"].T + w["e2_b"]

    def _synthesise(self, z: np.ndarray) -> np.ndarray:
        w = self.w
        xn = z @ w["B"] + _gelu(z @ w["d1_w"].T + w["d1_b"]) @ w["d2_w"].T + w["d2_b"]
        return w["mean"] + w["rms"][0] * xn

    def encode_flops(self, n_tokens: int) -> int:
        w = self.w
        d, k = w["A"].shape
        h = w["e1_w"].shape[0]
        return int(2 * n_tokens * (d * k + d * h + h * k))

    def _arrays(self) -> dict[str, np.ndarray]:
        return dict(self.w)

    def _set_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self.w = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}
