"""The seed's two communication-cost measures, per run, from the image bytes its served requests sent.

* additional_comm_cost = (image bytes - global-only image bytes) / (always-crop image bytes -
  global-only image bytes), all at the run's JPEG quality and over the same served requests, so
  always_crop is exactly 1 and global_only exactly 0 (seed §V, the x axis of its Fig. 4).
* relative_comm_cost = image bytes / bytes of the same samples' global images at JPEG quality 100
  (seed Fig. 12); None when the trace was not encoded at q100.

Image bytes are the JPEG payloads a request's policy put on the uplink (global image, crop,
original, progressive levels), from the trace's per-sample sizes; questions, control messages and
per-message overhead are left out, as in the seed, and appear in `bytes_per_request.uplink`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from edgevlm.sim.workload import Workload, policy_quality

#: The quality the seed's relative communication cost is measured against.
REFERENCE_QUALITY = 100


@dataclass(frozen=True)
class CommBytes:
    """Per event row: image bytes sent, and what global-only / always-crop would send for that sample."""

    image: np.ndarray
    global_only: np.ndarray
    always_crop: np.ndarray
    reference: np.ndarray | None  # the global image at q100, or None
    jpeg_quality: int

    def costs(self, rows: np.ndarray) -> dict:
        """The two measures over the event rows selected by the boolean mask `rows`."""
        if not rows.any():
            return {"additional_comm_cost": None, "relative_comm_cost": None, "image_bytes_per_request": None}
        img, g, a = self.image[rows].sum(), self.global_only[rows].sum(), self.always_crop[rows].sum()
        return {
            "additional_comm_cost": float((img - g) / (a - g)),
            "relative_comm_cost": (float(img / self.reference[rows].sum()) if self.reference is not None
                                   else None),
            "image_bytes_per_request": float(self.image[rows].mean()),
        }


def comm_bytes(policy_cfg, workload: Workload, events: pa.Table) -> CommBytes | None:
    """Per-row image bytes of `events` for the policy `policy_cfg`; None if the policy sends no image."""
    quality, _ = policy_quality(policy_cfg)
    if quality is None or quality not in workload.qualities:
        return None
    view = workload.at_quality(quality)
    q = view.quality_index(quality)
    rows = _sample_rows(workload, events.column("sample_id"))
    stages = events.column("stages").to_numpy(zero_copy_only=False).astype(np.int64)
    per_sample = _image_bytes(policy_cfg, view, q)
    if per_sample is None:
        return None
    image = per_sample(rows, stages)
    glob = view.global_bytes[:, q][rows].astype(np.float64)
    crop = glob + view.local_bytes[:, q][rows]
    ref = (view.global_bytes[:, view.qualities.index(REFERENCE_QUALITY)][rows].astype(np.float64)
           if REFERENCE_QUALITY in view.qualities else None)
    return CommBytes(image.astype(np.float64), glob, crop, ref, quality)


def _image_bytes(policy_cfg, view: Workload, q: int):
    """fn(sample rows, stages) -> image bytes per request, by the policy's protocol; None if unknown."""
    from edgevlm.sim.policies import policies
    from edgevlm.sim.policies.base import TwoStagePolicy
    from edgevlm.sim.policies.full_cloud import FullCloudPolicy
    from edgevlm.sim.policies.progressive import ProgressivePolicy, prog_levels

    cls = policies.builder(policy_cfg.kind)
    if issubclass(cls, TwoStagePolicy):  # global image; the crop when a stage-2 pass ran
        glob, local = view.global_bytes[:, q], view.local_bytes[:, q]
        return lambda rows, stages: glob[rows] + np.where(stages >= 2, local[rows], 0)
    if issubclass(cls, FullCloudPolicy):
        hd = view.hd_upload_bytes[:, q]
        return lambda rows, stages: hd[rows]
    if issubclass(cls, ProgressivePolicy):  # cumulative bytes of the levels used (stages = levels)
        cum = prog_levels(view)[0]
        return lambda rows, stages: cum[rows, np.clip(stages, 1, cum.shape[1]) - 1]
    return None


def _sample_rows(workload: Workload, sample_ids: pa.ChunkedArray) -> np.ndarray:
    from edgevlm.sim.summary import dictionary_codes

    codes, ids = dictionary_codes(sample_ids)
    return pd.Index(workload.sample_id).get_indexer(ids)[codes]
