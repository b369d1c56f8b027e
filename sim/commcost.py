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

import numpy as np
import pandas as pd
import pyarrow as pa

from edgevlm.sim.workload import Workload, policy_quality
from edgevlm.sim.policies import policies
from edgevlm.sim.policies.base import TwoStagePolicy
from edgevlm.sim.policies.full_cloud import FullCloudPolicy
from edgevlm.sim.policies.progressive import ProgressivePolicy, prog_levels
from edgevlm.sim.summary import dictionary_codes

#: The quality the seed's relative communication cost is measured against.
REFERENCE_QUALITY = 100


class CommMeter:
    """Running byte sums of the served requests, fed batch by batch (sim/summary.py's bounded pass).

    Byte counts are integers, so the sums are exact whatever the batching: the ratios equal those
    computed over the whole log at once.
    """

    def __init__(self, per_sample, glob: np.ndarray, crop: np.ndarray, ref: np.ndarray | None,
                 sample_index: pd.Index, jpeg_quality: int):
        self._per_sample, self._glob, self._crop, self._ref = per_sample, glob, crop, ref
        self._index = sample_index
        self.jpeg_quality = jpeg_quality
        self.reference = ref
        self._n = self._image = self._global = self._always = self._reference = 0

    def add(self, sample_ids: pa.Array | pa.ChunkedArray, stages: np.ndarray, served: np.ndarray) -> None:
        """Add the rows of one batch selected by the boolean mask `served`."""
        if not served.any():
            return
        codes, ids = dictionary_codes(sample_ids)
        rows = self._index.get_indexer(ids)[codes][served]
        self._n += int(rows.size)
        self._image += int(self._per_sample(rows, stages[served].astype(np.int64)).sum())
        self._global += int(self._glob[rows].sum())
        self._always += int(self._crop[rows].sum())
        if self._ref is not None:
            self._reference += int(self._ref[rows].sum())

    def costs(self) -> dict:
        """The two measures over every served row added so far."""
        if not self._n:
            return {"additional_comm_cost": None, "relative_comm_cost": None, "image_bytes_per_request": None}
        return {
            "additional_comm_cost": float(self._image - self._global) / float(self._always - self._global),
            "relative_comm_cost": (float(self._image) / float(self._reference) if self._ref is not None
                                   else None),
            "image_bytes_per_request": float(self._image) / self._n,
        }


def comm_meter(policy_cfg, workload: Workload) -> CommMeter | None:
    """An empty meter of image bytes for the policy `policy_cfg`; None if the policy sends no image."""
    quality, _ = policy_quality(policy_cfg)
    if quality is None or quality not in workload.qualities:
        return None
    view = workload.at_quality(quality)
    q = view.quality_index(quality)
    per_sample = _image_bytes(policy_cfg, view, q)
    if per_sample is None:
        return None
    glob = view.global_bytes[:, q].astype(np.int64)
    crop = glob + view.local_bytes[:, q]
    ref = (view.global_bytes[:, view.qualities.index(REFERENCE_QUALITY)].astype(np.int64)
           if REFERENCE_QUALITY in view.qualities else None)
    return CommMeter(per_sample, glob, crop, ref, pd.Index(workload.sample_id), quality)


def _image_bytes(policy_cfg, view: Workload, q: int):
    """fn(sample rows, stages) -> image bytes per request, by the policy's protocol; None if unknown."""
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
