"""Model, hardware and edge-device profiles: the figures that turn trace rows into seconds and FLOPs.

A scenario names a profile (`server.model: llava-1.5-7b`) or defines one inline with the same
fields (`server.model: {name: my-vlm, d_model: 2048, ...}`). Every figure below cites its source.

Models (transformer shape for FLOPs(n) = (24·n·d² + 4·n²·d)·L, eq. 17 of the seed paper):
- LLaVA-1.5-7B / 13B: Liu et al. 2023, "Improved Baselines with Visual Instruction Tuning";
  HF configs liuhaotian/llava-v1.5-{7b,13b}: Vicuna-7B d=4096, L=32 (13B: d=5120, L=40), MHA, so
  the KV width is d. CLIP ViT-L/14 at 336 px gives 24×24 = 576 visual tokens.
- Qwen2.5-VL-7B: Qwen team 2025, "Qwen2.5-VL Technical Report"; HF config Qwen/Qwen2.5-VL-7B-Instruct:
  d=3584, L=28, 28 query heads and 4 KV heads of 128 (GQA: KV width 512), 8.3 B parameters with the
  ViT. Resolution is dynamic: one visual token per 28×28 px after the 2×2 patch merge; we fix the
  reference input at 448×448 px = 16×16 = 256 tokens.
- MobileVLM-1.7B (the default full-edge model): Chu et al. 2023, "MobileVLM: A Fast, Strong and Open
  Vision Language Assistant for Mobile Devices": MobileLLaMA-1.4B d=2048, L=24, CLIP ViT-L/14-336
  and an LDP projector that pools 576 patches to 144 visual tokens.

Vision-encoder FLOPs per image use the same per-layer formula on the ViT's shape:
- CLIP ViT-L/14-336 (d=1024, L=24, n=577 incl. CLS): (24·577·1024² + 4·577²·1024)·24 = 0.381 TFLOPs,
  plus the 2-layer MLP projector 2·576·(1024·d + d²): 0.024 TFLOPs at d=4096, 0.036 at d=5120.
- Qwen2.5-VL ViT (d=1280, L=32, n=1024 patches of 14 px at 448 px): (24·1024·1280² + 4·1024²·1280)·32
  = 1.46 TFLOPs (an upper bound: 28 of its 32 layers use windowed attention).
- MobileVLM: the same CLIP ViT-L/14-336 (0.381 TFLOPs); the LDP projector is negligible.

Vision tower alone (what a progressive edge runs before its codec, issue 20): the tower up to the layer
whose output the projector reads, its weights, and that output's shape (tokens x width):
- LLaVA-1.5 and MobileVLM: CLIP ViT-L/14-336 read at `vision_feature_layer: -2` (HF configs
  liuhaotian/llava-v1.5-7b "mm_vision_select_layer": -2; MobileVLM the same), i.e. 23 of 24 layers:
  (24·577·1024² + 4·577²·1024)·23 = 0.365 TFLOPs; output 576 patch tokens x 1024 (CLS dropped), i.e.
  1.18 MB in float16; 303.5 M parameters (openai/clip-vit-large-patch14-336 vision model).
- Qwen2.5-VL: its ViT as above (1.46 TFLOPs, 1024 patches x 1280 before the 2x2 merger), 0.675 B
  parameters (Qwen2.5-VL report, Table 1); the merger MLP (4·1280 -> 4·1280 -> d) on 256 merged tokens
  2·256·(5120² + 5120·d) = 0.023 TFLOPs is its projector.

Hardware (dense, no sparsity):
- A100-80GB SXM: 312 TFLOP/s bf16, 2039 GB/s HBM2e (NVIDIA A100 datasheet, 2021).
- H100 SXM: 989 TFLOP/s bf16, 3350 GB/s HBM3, 80 GB (NVIDIA H100 datasheet, 2023).
- L4: 121 TFLOP/s bf16, 300 GB/s GDDR6, 24 GB (NVIDIA L4 datasheet, 2023).
- NXP i.MX95: eIQ Neutron NPU, 2 TOPS INT8; 6× Cortex-A55 at up to 1.8 GHz; 32-bit LPDDR5 at
  6400 MT/s = 25.6 GB/s (NXP i.MX95 fact sheet). DESIGN.md §7: MobileNetV2-224 INT8 (0.6 GOPs) takes
  about 3 ms on the NPU and 37 ms on the CPU, i.e. 200 GOP/s = 10% of the NPU's peak and 16 GOP/s on
  the CPU, about 5% of its 0.35 TOP/s INT8 NEON peak (6 cores × 1.8 GHz × 16 int8 MACs × 2).

Efficiency defaults (`mfu`, `bw_efficiency`): datacenter GPUs 0.4 and 0.7. Served LLM prefill reaches
40-60% model-FLOPs utilisation and decode kernels 60-80% of HBM peak (vLLM, TensorRT-LLM reports).
With these, LLaVA-1.5-7B decode at batch 1 on the A100 is 14.1 GB / (2039 GB/s · 0.7) = 9.9 ms per
token: within 2× of the 13.5 ms llama.cpp measured (DESIGN.md §7), and faster as serving stacks are.
Edge: the measured 10% NPU and 5% CPU efficiencies above, and 0.6 of LPDDR bandwidth.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt


class _Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field("custom", min_length=1, description="a label; registered profiles carry their key")


class ModelProfile(_Profile):
    """A served VLM: the transformer shape for FLOPs(n), weights and KV cache, and its vision input."""

    d_model: PositiveInt
    n_layers: PositiveInt
    params_b: PositiveFloat = Field(description="parameters, billions (language model + vision encoder)")
    visual_tokens: PositiveInt = Field(description="visual tokens per image at the native resolution")
    vision_px: PositiveInt
    kv_dim: PositiveInt | None = Field(None, description="K (= V) width per layer: n_kv_heads·head_dim; "
                                                         "default d_model (multi-head attention)")
    vision_tflops: float = Field(0.0, ge=0, description="vision encoder + projector FLOPs per image, 1e12")
    # The vision tower alone and the projector (a progressive edge runs the tower; the server the projector).
    vision_tower_tflops: float | None = Field(None, ge=0, description="vision tower up to the feature layer the "
                                              "projector reads, per image, 1e12 FLOPs")
    vision_tower_params_b: float | None = Field(None, gt=0, description="vision tower parameters, billions")
    vision_tower_tokens: PositiveInt | None = Field(None, description="tokens the tower hands the projector")
    vision_width: PositiveInt | None = Field(None, description="width of those tokens (the tower's hidden size)")
    projector_tflops: float = Field(0.0, ge=0, description="projector FLOPs per image, 1e12")

    def flops(self, n_tokens: int | float) -> float:
        """FLOPs(n) = (24·n·d² + 4·n²·d)·L, the paper's per-pass transformer cost (eq. 17)."""
        d = self.d_model
        return (24.0 * n_tokens * d * d + 4.0 * n_tokens * n_tokens * d) * self.n_layers

    def kv_bytes_per_token(self, dtype_bytes: float) -> float:
        """K and V of one token in every layer."""
        return 2.0 * self.n_layers * (self.kv_dim or self.d_model) * dtype_bytes


class HardwareProfile(_Profile):
    """An accelerator as the roofline sees it: peak compute, memory bandwidth and realistic efficiencies."""

    peak_tflops: PositiveFloat = Field(description="dense peak in the compute precision, 1e12 FLOP/s")
    mem_bw_gbps: PositiveFloat = Field(description="memory bandwidth, GB/s (1e9 bytes/s)")
    memory_gb: PositiveFloat = Field(description="memory for weights and the KV cache, GB")
    dtype_bytes: PositiveFloat = Field(2.0, description="bytes per weight and KV element (bf16 2, int8 1)")
    mfu: float = Field(0.4, gt=0, le=1, description="fraction of peak compute reached")
    bw_efficiency: float = Field(0.7, gt=0, le=1, description="fraction of peak bandwidth reached")


class EdgeProfile(_Profile):
    """An edge device: image handling times, and the accelerator that runs a full-edge VLM."""

    prep_s: float = Field(ge=0, description="resize the frame to the vision input and JPEG-encode it")
    crop_s: float = Field(ge=0, description="crop the full-resolution original and JPEG-encode it")
    hardware: HardwareProfile


def _vit_tflops(d: int, layers: int, n: int) -> float:
    return (24.0 * n * d * d + 4.0 * n * n * d) * layers / 1e12


_CLIP_L336 = _vit_tflops(1024, 24, 577)


def _projector_tflops(d: int) -> float:
    return 2.0 * 576 * (1024 * d + d * d) / 1e12


#: CLIP ViT-L/14-336 as LLaVA reads it (feature layer -2: 23 layers), its output shape and weights.
_CLIP_L336_TOWER = dict(vision_tower_tflops=_vit_tflops(1024, 23, 577), vision_tower_params_b=0.3035,
                        vision_tower_tokens=576, vision_width=1024)
_QWEN_MERGER_TFLOPS = 2.0 * 256 * (5120 * 5120 + 5120 * 3584) / 1e12

MODELS: dict[str, ModelProfile] = {m.name: m for m in (
    ModelProfile(name="llava-1.5-7b", d_model=4096, n_layers=32, params_b=7.06, visual_tokens=576, vision_px=336,
                 vision_tflops=_CLIP_L336 + _projector_tflops(4096), projector_tflops=_projector_tflops(4096),
                 **_CLIP_L336_TOWER),
    ModelProfile(name="llava-1.5-13b", d_model=5120, n_layers=40, params_b=13.35, visual_tokens=576,
                 vision_px=336, vision_tflops=_CLIP_L336 + _projector_tflops(5120),
                 projector_tflops=_projector_tflops(5120), **_CLIP_L336_TOWER),
    ModelProfile(name="qwen2.5-vl-7b", d_model=3584, n_layers=28, params_b=8.29, visual_tokens=256,
                 vision_px=448, kv_dim=4 * 128, vision_tflops=_vit_tflops(1280, 32, 1024),
                 vision_tower_tflops=_vit_tflops(1280, 32, 1024), vision_tower_params_b=0.675,
                 vision_tower_tokens=1024, vision_width=1280, projector_tflops=_QWEN_MERGER_TFLOPS),
    ModelProfile(name="mobilevlm-1.7b", d_model=2048, n_layers=24, params_b=1.7, visual_tokens=144,
                 vision_px=336, vision_tflops=_CLIP_L336, **_CLIP_L336_TOWER),
)}

HARDWARE: dict[str, HardwareProfile] = {h.name: h for h in (
    HardwareProfile(name="a100-80gb", peak_tflops=312.0, mem_bw_gbps=2039.0, memory_gb=80.0),
    HardwareProfile(name="h100-sxm", peak_tflops=989.0, mem_bw_gbps=3350.0, memory_gb=80.0),
    HardwareProfile(name="l4", peak_tflops=121.0, mem_bw_gbps=300.0, memory_gb=24.0),
    # Edge accelerators run INT8 weights (dtype_bytes 1) at the efficiencies measured above.
    HardwareProfile(name="imx95-npu", peak_tflops=2.0, mem_bw_gbps=25.6, memory_gb=8.0, dtype_bytes=1.0,
                    mfu=0.10, bw_efficiency=0.6),
    HardwareProfile(name="imx95-cpu", peak_tflops=0.35, mem_bw_gbps=25.6, memory_gb=8.0, dtype_bytes=1.0,
                    mfu=0.05, bw_efficiency=0.6),
    # An accelerator that takes no time: for what-if studies and theory checks.
    HardwareProfile(name="ideal", peak_tflops=1e15, mem_bw_gbps=1e15, memory_gb=1e6, mfu=1.0, bw_efficiency=1.0),
)}

# i.MX95: a 12 MP frame resized and encoded with libjpeg-turbo on the Cortex-A55 cores takes tens of ms;
# the crop is a smaller resize. These are estimates to be replaced by calibration (testbed issue).
EDGES: dict[str, EdgeProfile] = {e.name: e for e in (
    EdgeProfile(name="imx95", prep_s=0.025, crop_s=0.015, hardware=HARDWARE["imx95-npu"]),
    EdgeProfile(name="imx95-cpu", prep_s=0.025, crop_s=0.015, hardware=HARDWARE["imx95-cpu"]),
    EdgeProfile(name="ideal", prep_s=0.0, crop_s=0.0, hardware=HARDWARE["ideal"]),
)}


def resolve(value: Any, registry: dict[str, _Profile], what: str) -> Any:
    """Pydantic before-validator body: a registered name becomes its profile; a mapping passes through."""
    if isinstance(value, str):
        if value not in registry:
            raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(registry)}, or a mapping with the "
                             f"fields of a custom {what}")
        return registry[value]
    return value


def dump(profile: _Profile, registry: dict[str, _Profile]) -> Any:
    """Serialiser: a registered profile unchanged dumps as its name, anything else as its fields."""
    if registry.get(profile.name) == profile:
        return profile.name
    return profile.model_dump(mode="json")
