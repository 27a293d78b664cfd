"""Published video (and PixArt image) diffusion transformers as :class:`VideoDiTConfig` presets.

Each preset carries the published architecture hyperparameters, with the file (repository, tag, path) they
come from. soraprep's ``VideoDiT`` built from a preset has the same layers and parameter shapes as the
official model (module names differ; no official checkpoint loads into it). What is not modelled is said
per preset; parameter totals against the published figures are pinned in tests/models/test_presets_video.py
and listed in docs/models.md.

Not expressed (and why):

- ``MovieGen-30B`` (Meta, arXiv 2410.13720): no code or config is public, only the paper, and from this
  environment only its abstract and third-party summaries were reachable (a LLaMA-3-style transformer,
  cross-attention to text, adaLN for the timestep, 30B parameters, 73K-token context). Without the
  paper's own hyperparameter table (widths, FFN size, text-token counts, modulation layout) to cite, a
  preset would be a guess. Add it from the paper's table (Section 3) when it can be read.

Imported at the end of :mod:`soraprep.models.config`, so ``PRESETS`` holds these names.
"""

from __future__ import annotations

from soraprep.models.config import PRESETS, VideoDiTConfig

_XL = dict(hidden_size=1152, depth=28, num_heads=16)  # DiT-XL / PixArt-XL width, depth, heads

# PixArt-alpha XL/2 at 256 px (PixArt-alpha/PixArt-alpha diffusion/model/nets/PixArt.py ``PixArt_XL_2``:
# depth 28, hidden 1152, patch 2, heads 16; ``model_max_length=120`` T5-XXL tokens (4096-d); adaLN-single
# ``t_block`` + per-block ``scale_shift_table``; ``T2IFinalLayer``; the null caption ``y_embedding`` is a
# buffer; pred_sigma). An image model: one latent frame. Published: 0.6B (README, "#Params").
PRESETS["PixArt-alpha-XL/2"] = VideoDiTConfig(
    input_size=(1, 32, 32), **_XL, modulation="single", null_caption="buffer", text_dim=4096, text_len=120,
)

# Latte-XL/2, the class-conditional UCF101 model (Vchitect/Latte models/latte.py ``Latte_XL_2``: depth 28,
# hidden 1152, patch 2, heads 16; blocks alternate spatial / temporal, each an adaLN-Zero DiT block with its
# own MLP; configs/ucf101/ucf101_train.yaml: 16 frames, 256 px, ``extras: 2`` = class-conditional, 101
# classes, learn_sigma). Not modelled: the frozen sin-cos ``pos_embed`` / ``temp_embed`` parameters
# (313,344 numbers, requires_grad=False), and that the official code recomputes each block's adaLN
# projection per frame (spatial blocks) / per position (temporal blocks) from a repeated timestep.
PRESETS["Latte-XL/2"] = VideoDiTConfig(
    input_size=(16, 32, 32), **_XL, attention="alternating", conditioning="class", num_classes=101,
)

# Open-Sora 1.0 STDiT-XL/2 (hpcaitech/Open-Sora tag v1.0.0 opensora/models/stdit/stdit.py: one block =
# spatial attention, temporal attention on the unnormalised residual reusing the spatial gate, cross-attention,
# MLP; adaLN-single; configs/opensora/train/16x256x256.py: 16 frames at 256 px through the SD VAE, T5 120
# tokens). Published: 724M (README at v1.0.0: "The number of parameters is 724M").
PRESETS["OpenSora-1.0-XL/2"] = VideoDiTConfig(
    input_size=(16, 32, 32), **_XL, attention="factorized", modulation="single", temporal_modulation=False,
    null_caption="buffer", text_dim=4096, text_len=120,
)

# Open-Sora 1.1 STDiT2-XL/2 (tag v1.1.0 opensora/models/stdit/stdit2.py: temporal attention with its own
# norm and shift/scale/gate from ``t_block_temp`` + ``scale_shift_table_temporal``; RoPE over time; qk
# RMSNorm per head (configs/opensora-v1-1/train/stage1.py ``qk_norm=True``, T5 ``model_max_length=200``);
# micro-conditions csize, ar, fl, fps; STDiT2 adds csize + ar to the spatial and fl + fps to the temporal
# timestep embedding, ours adds all four to one: the same parameters and MACs). Published: 700M (README at
# v1.1.0, model table).
PRESETS["OpenSora-1.1-STDiT2-XL/2"] = VideoDiTConfig(
    input_size=(16, 32, 32), **_XL, attention="factorized", modulation="single", qk_norm="rms_head",
    pos_embed="sincos2d_rope_t", micro_conditions=("csize", "ar", "fl", "fps"), null_caption="buffer",
    text_dim=4096, text_len=200,
)

# Open-Sora 1.2 STDiT3-XL/2 (tag v1.2.0 opensora/models/stdit/stdit3.py: 28 spatial + 28 temporal blocks,
# each with attention, cross-attention and MLP, so depth 56 alternating; adaLN-single; qk RMSNorm per head;
# RoPE in temporal blocks; fps micro-condition; configs/opensora-v1-2/train/stage1.py: T5 300 tokens; its
# VAE compresses 4x8x8 to 4 channels (17 frames -> 5 latents), e.g. 51 frames at 256 px -> 13 x 32 x 32).
# Published: 1.1B (README at v1.2.0, "Diffusion | 1.1B").
PRESETS["OpenSora-1.2-STDiT3-XL/2"] = VideoDiTConfig(
    input_size=(13, 32, 32), hidden_size=1152, depth=56, num_heads=16, attention="alternating",
    modulation="single", qk_norm="rms_head", pos_embed="sincos2d_rope_t", micro_conditions=("fps",),
    null_caption="buffer", text_dim=4096, text_len=300,
)

# Wan 2.1 text-to-video (Wan-Video/Wan2.1 wan/modules/model.py ``WanModel``; wan/configs/wan_t2v_1_3B.py and
# wan_t2v_14B.py: dim, ffn_dim, heads, layers, patch (1, 2, 2), vae_stride (4, 8, 8), qk_norm, cross_attn_norm;
# shared_config.py: umT5-XXL, text_len 512). Full 3D attention with 3D RoPE, qk RMSNorm over the width in
# self- and cross-attention, affine LayerNorm before cross-attention, adaLN-single (``time_projection`` +
# per-block ``modulation`` (6, D); ``Head`` (2, D)), 16 latent channels in and out. Default input: 81 frames
# at 480x832 -> 21 x 60 x 104 latents. CFG uses the encoded empty prompt, so there is no null caption.
_WAN = dict(input_size=(21, 60, 104), in_channels=16, learn_sigma=False, modulation="single", qk_norm="rms_full",
            cross_qk_norm=True, cross_norm=True, pos_embed="rope", null_caption="none", caption_dropout_prob=0.0,
            text_dim=4096, text_len=512)
PRESETS["Wan2.1-1.3B"] = VideoDiTConfig(hidden_size=1536, depth=30, num_heads=12, mlp_hidden=8960, **_WAN)
PRESETS["Wan2.1-14B"] = VideoDiTConfig(hidden_size=5120, depth=40, num_heads=40, mlp_hidden=13824, **_WAN)

# Step-Video-T2V (stepfun-ai/Step-Video-T2V stepvideo/modules/model.py ``StepVideoModel`` defaults: 48 layers,
# 48 heads x 128, 64 latent channels in and out, patch 1, caption_channels [6144, 1024]; blocks.py: affine
# LayerNorms, bias-free attention and FFN (4 x width, tanh GELU), qk RMSNorm per head in self- and cross-
# attention, 3D RoPE, adaLN-single; Step-LLM captions (6144-d, max_length 320) after a LayerNorm and a
# PixArt text projection, plus Hunyuan-CLIP tokens (1024-d, max_length 77; api/call_remote_server.py) through
# a Linear, prepended. README: 16x16 spatial and 8x temporal VAE compression; 204 frames at 544x992 ->
# 26 x 34 x 62 latents. Published: 30B (README).
PRESETS["Step-Video-T2V-30B"] = VideoDiTConfig(
    input_size=(26, 34, 62), patch_size=(1, 1, 1), in_channels=64, learn_sigma=False, hidden_size=6144, depth=48,
    num_heads=48, mlp_ratio=4.0, modulation="single", qk_norm="rms_head", cross_qk_norm=True, norm_affine=True,
    block_bias=False, pos_embed="rope", null_caption="none", caption_dropout_prob=0.0, text_norm=True,
    text_dim=6144, text_len=320, text2_dim=1024, text2_len=77,
)

# Open-Sora-Plan 1.3 (PKU-YuanGroup/Open-Sora-Plan tag v1.3.0, opensora/models/diffusion/opensora_v1_3/
# modeling_opensora.py ``OpenSoraT2V_v1_3_2B_122``: 32 layers, 24 heads x 96 = 2304, patch (1, 2, 2), mT5-XXL
# captions (4096-d) through a PixArt text projection, adaLN-single, 3D RoPE, tanh-GELU FFN 4x, biases,
# LayerNorms without affine; ``sparse1d`` in blocks 2..29 with alternating single / group skip; modules.py;
# scripts/text_condition/gpu/train_t2v_v1_3.sh: ``--sparse1d --sparse_n 4``, ``--model_max_length 512``,
# WF-VAE ``WFVAEModel_D8_4x8x8``: 8 latent channels, 4x8x8). CFG through the encoded empty prompt. Default
# input: 93 frames at 480x640 -> 24 x 60 x 80 latents. Published: 2.7B (``# 2.7B`` next to the model
# table in modeling_opensora.py; docs/Report-v1.3.0.md "a 2.7B model").
PRESETS["OpenSora-Plan-1.3"] = VideoDiTConfig(
    input_size=(24, 60, 80), in_channels=8, learn_sigma=False, hidden_size=2304, depth=32, num_heads=24,
    modulation="single", pos_embed="rope", skiparse=4, skiparse_dense=2, null_caption="none",
    caption_dropout_prob=0.0, text_dim=4096, text_len=512,
)

# The published parameter totals these presets are checked against (tests/models/test_presets_video.py).
PUBLISHED_PARAMS = {
    "PixArt-alpha-XL/2": 0.6e9, "OpenSora-1.0-XL/2": 724e6, "OpenSora-1.1-STDiT2-XL/2": 700e6,
    "OpenSora-1.2-STDiT3-XL/2": 1.1e9, "Wan2.1-1.3B": 1.3e9, "Wan2.1-14B": 14e9, "Step-Video-T2V-30B": 30e9,
    "OpenSora-Plan-1.3": 2.7e9,
}
