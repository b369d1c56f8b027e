"""An optional vision-encoder pool (`server.encoder`): images are encoded apart from the LLM workers.

Production VLM servers disaggregate encode from prefill and decode; with crops and progressive levels,
encoder and LLM load move independently. With `server.encoder: {replicas, hardware}` every stage-1 and
stage-2 pass first encodes its images on this pool (batch-1 FCFS over `replicas` accelerators, the
`fifo` server, Erlang C's queue), each image taking the model's vision FLOPs / (peak·mfu) of the pool's
hardware; the LLM pass then receives tokens (no vision encoder on the LLM workers). Without the block
(default) the LLM workers encode, as before, byte for byte.

Simplifications: encoding is not subject to `max_queue` (a request dropped at the LLM has been
encoded); a stage 2 that reuses stage 1's prefix still encodes both images; the event log's
s<k>_start_s is the LLM pass's start, so encoder wait and work show as time before it; summary.json
reports the pool under `encoder`.
"""

from __future__ import annotations

import simpy
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_serializer, field_validator

from edgevlm.sim.latency import Job
from edgevlm.sim.profiles import HARDWARE, HardwareProfile, ModelProfile, dump, resolve
from edgevlm.sim.server.fifo import FifoServer


class EncoderPoolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    replicas: PositiveInt = 1
    hardware: HardwareProfile = Field(HARDWARE["a100-80gb"], description="a name in HARDWARE, or custom fields")

    @field_validator("hardware", mode="before")
    @classmethod
    def _hardware(cls, v):
        return resolve(v, HARDWARE, "hardware")

    @field_serializer("hardware")
    def _dump_hardware(self, v):
        return dump(v, HARDWARE)


def build_encoder_pool(env: simpy.Environment, cfg: EncoderPoolConfig, model: ModelProfile) -> FifoServer:
    """A `fifo` server over the pool's accelerators timing `images` vision-encoder passes per job."""
    hw = cfg.hardware
    per_image_s = model.vision_tflops * 1e12 / (hw.peak_tflops * 1e12 * hw.mfu)
    return FifoServer(env, cfg.replicas, lambda job: job.images * per_image_s, None)


def encode_job(job: Job) -> Job:
    """The encoder's share of an LLM pass: its images only."""
    return Job(job.stage, job.images, 0, 0, 0)
