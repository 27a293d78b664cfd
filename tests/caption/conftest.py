"""Fixtures for captioning tests: generated clips + manifests, and a tiny random-weight LLaVA on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from soraprep.manifest import write_manifest

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'].upper() }}: "
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %} "
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def make_clips(folder: Path, n: int = 4, frames: int = 30) -> list[dict]:
    """``n`` clip files (each two shots with its own seeds) and their manifest rows (paths relative)."""
    from soraprep.video.synth import Shot, make_video

    rows = []
    for k in range(n):
        p = folder / "clips" / f"clip{k}.mp4"
        p.parent.mkdir(parents=True, exist_ok=True)
        make_video(p, [Shot(frames // 2, seed=100 + k), Shot(frames - frames // 2, kind="static", seed=200 + k)],
                   width=96, height=64)
        rows.append({"clip_id": f"v{k}-0000", "video_id": f"v{k}", "source": str(p), "path": f"clips/clip{k}.mp4",
                     "cut_mode": "exact", "num_frames": frames, "fps": 25.0, "keep": True, "error": None})
    return rows


@pytest.fixture
def clips():
    """The clip factory: ``clips(folder, n=4, frames=30) -> rows``."""
    return make_clips


@pytest.fixture
def manifest(tmp_path) -> Path:
    """4 kept clips + 1 filtered-out row + 1 row with a curation error, as a Parquet manifest."""
    rows = make_clips(tmp_path)
    rows.append({**rows[0], "clip_id": "dropped", "keep": False, "filter_reason": "too dark"})
    rows.append({**rows[1], "clip_id": "broken", "error": {"stage": "probe", "kind": "corrupt", "message": "bad"}})
    path = tmp_path / "manifest.parquet"
    write_manifest(path, rows)
    return path


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory) -> Path:
    """A real LLaVA architecture (CLIP vision tower + Llama) with random weights, a BPE tokenizer trained
    here, and a CLIP image processor, saved to a folder: loads with AutoProcessor/AutoModelForImageTextToText."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    folder = tmp_path_factory.mktemp("tiny-llava")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<unk>", "<s>", "</s>", "<pad>", "<image>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = ["a red car drives along the coast road at sunset", "the camera pans left over a green forest",
              "USER: describe the frames ASSISTANT:", "frame one of four shows a person walking a dog"]
    tok.train_from_iterator(corpus * 20, trainer)
    ftok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=ftok, patch_size=16,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               chat_template=CHAT_TEMPLATE)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=16, projection_dim=32)
    text = LlamaConfig(vocab_size=len(ftok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                       pad_token_id=ftok.pad_token_id, bos_token_id=ftok.bos_token_id, eos_token_id=ftok.eos_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=ftok.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-1, image_seq_length=4)
    import torch

    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_text_llm(tmp_path_factory) -> Path:
    """A tiny random Llama causal LM with its own BPE tokenizer and chat template (no image processor)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llm")
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["merge the frame descriptions into one caption"] * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    ftok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")
    ftok.chat_template = CHAT_TEMPLATE
    cfg = LlamaConfig(vocab_size=len(ftok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                      pad_token_id=ftok.pad_token_id, bos_token_id=ftok.bos_token_id, eos_token_id=ftok.eos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    ftok.save_pretrained(folder)
    return folder
