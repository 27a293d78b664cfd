"""Cleaning rules, language detection, score text, prompts (en/zh), profiles and the prompt hash."""

from __future__ import annotations

import pytest

from soraprep.caption.clean import (
    clean_caption,
    collapse_repeats,
    detect_language,
    score_text,
    strip_prefix,
    truncate,
    with_score_text,
)
from soraprep.caption.profiles import PROFILES, profile_for
from soraprep.caption.prompts import prompt_hash, prompt_set


@pytest.mark.parametrize("raw, want", [
    ("The video shows a red car driving.", "A red car driving."),
    ("In this video, a man walks a dog.", "A man walks a dog."),
    ("This clip depicts waves at dusk.", "Waves at dusk."),
    ("Sure! The video begins with a sunrise over hills.", "A sunrise over hills."),
    ("The images show two birds.", "Two birds."),
    ("A cat sleeps.", "A cat sleeps."),                     # nothing to strip: untouched
    ("视频中是一个城市的夜景。", "一个城市的夜景。"),
    ("在这段视频中，一位女士在跑步。", "一位女士在跑步。"),
    ("该视频展示了海浪拍打礁石。", "海浪拍打礁石。"),
    ("画面中有一只猫。", "画面中有一只猫。"),                   # a real description, not boilerplate
])
def test_strip_prefix(raw, want):
    assert strip_prefix(raw) == want


def test_collapse_repeats():
    assert collapse_repeats("A dog runs. A dog runs. It barks.") == "A dog runs. It barks."
    assert collapse_repeats("A cat a cat a cat a cat sits.") == "A cat sits."
    assert collapse_repeats("一只猫在跑。一只猫在跑。") == "一只猫在跑。"
    assert collapse_repeats("奔跑奔跑奔跑的狗。") == "奔跑的狗。"
    assert collapse_repeats("One. Two. Three.") == "One. Two. Three."


def test_length_bounds_and_flags():
    long = " ".join(f"Sentence number {i} is here." for i in range(10))       # 50 words
    r = clean_caption(long, max_units=12)
    assert r.text == "Sentence number 0 is here. Sentence number 1 is here." and "truncated" in r.flags
    assert truncate("one two three four five six", 4, "en") == "one two three four"   # no sentence end fits
    assert truncate("一二三四五六七八。", 4, "zh") == "一二三四"
    assert clean_caption("Ok.").failure == "too_short"
    assert clean_caption("   ").failure == "empty"
    assert clean_caption("The video shows a cat on a sofa.").failure is None
    assert clean_caption("一只猫在沙发上睡觉。", lang="en").failure == "wrong_language"
    assert clean_caption("A cat sleeps on the sofa.", lang="zh").failure == "wrong_language"
    assert clean_caption("一只猫在沙发上睡觉。", lang="zh").failure is None


def test_detect_language():
    assert detect_language("A dog runs on the beach.") == "en"
    assert detect_language("一只狗在沙滩上奔跑。") == "zh"
    assert detect_language("一只 dog 在沙滩上奔跑") == "zh"
    assert detect_language("123 !!") == "other"


def test_score_text_like_open_sora():
    row = {"aesthetic_score": 5.53, "motion_score": 3.21, "fps": 29.97}
    assert score_text(row) == "aesthetic score: 5.5, motion score: 3.2, fps: 30."
    assert score_text({"fps": 25.0}, fps=False) == ""
    assert score_text({"aes": 4.0}, columns={"aesthetic": "aes"}, fps=False) == "aesthetic score: 4.0."
    assert with_score_text("A cat.", "fps: 25.") == "A cat. fps: 25."


def test_prompts_en_zh_and_hash():
    en, zh = prompt_set("en"), prompt_set("zh")
    assert "8 frames" in en.video_prompt(8) and "8帧" in zh.video_prompt(8)
    assert "frame 2 of 4" in en.frame_prompt(1, 4) and "第2帧" in zh.frame_prompt(1, 4)
    s = zh.summary_prompt(["一只猫。", "一只狗。"])
    assert "第1帧：一只猫。" in s and "第2帧：一只狗。" in s and "2帧" in s
    assert en.summary_prompt(["a", "b"]).count("Frame ") == 2
    with pytest.raises(ValueError, match="fr"):
        prompt_set("fr")
    h = prompt_hash(en, mode="video", frames=8)
    assert len(h) == 16 and h == prompt_hash(prompt_set("en"), mode="video", frames=8)
    assert h != prompt_hash(en, mode="video", frames=4) != prompt_hash(zh, mode="video", frames=8)
    over = prompt_set("en", {"en": {"video": "Describe {n} frames."}})
    assert over.video_prompt(3) == "Describe 3 frames." and over.frame == en.frame


@pytest.mark.parametrize("model, name", [
    ("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2.5-vl"), ("Qwen/Qwen2-VL-2B-Instruct", "qwen2-vl"),
    ("Qwen/Qwen-VL-Chat", "qwen-vl"), ("01-ai/Yi-VL-34B", "yi-vl"),
    ("internlm/internlm-xcomposer2-vl-7b", "internlm-xcomposer2-vl"), ("THUDM/cogvlm-chat-hf", "cogvlm"),
    ("openbmb/MiniCPM-V-2_6", "minicpm-v"), ("LanguageBind/Video-LLaVA-7B-hf", "video-llava"),
    ("llava-hf/llava-1.5-7b-hf", "llava"), ("/models/my-own-vlm", "generic"), ("gpt-4o-mini", "generic"),
])
def test_profiles_match(model, name):
    assert profile_for(model).name == name


def test_remote_code_profiles_are_server_only():
    for name in ("yi-vl", "internlm-xcomposer2-vl", "cogvlm", "minicpm-v", "qwen-vl"):
        assert PROFILES[name].backends == ("openai",)
    assert all(p.mode in ("video", "frames+summary") and p.frames >= 1 for p in PROFILES.values())
    assert "zh" in PROFILES["qwen2-vl"].langs and PROFILES["video-llava"].frames == 8
