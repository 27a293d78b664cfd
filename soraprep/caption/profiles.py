"""Profiles of the vision-language models our users caption with: what each one wants and who serves it.

A profile gives the recommended frame count, the mode (``video``: all frames in one request, for
video-native / multi-image models; ``frames+summary``: one request per frame, then an LLM merges them,
for single-image models), the image size (short side, px), the languages it writes well, the backends that
can run it and notes. :func:`profile_for` matches a model name or path (case-insensitive substrings,
most specific first) and falls back to ``generic``, so any ``--model`` works.

Models whose authors ship remote code (Yi-VL, InternLM-XComposer2-VL, CogVLM, MiniCPM-V, Qwen-VL) are
server-only here: serve them with their authors' or LMDeploy's / vLLM's OpenAI-compatible server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MODES = ("video", "frames+summary")


@dataclass(frozen=True)
class Profile:
    name: str
    match: tuple[str, ...]                  # lower-case substrings of the model name/path
    frames: int                             # recommended frame count
    mode: str                               # "video" | "frames+summary"
    image_size: int                         # short side in px the frames are resized to
    langs: tuple[str, ...] = ("en",)
    backends: tuple[str, ...] = ("openai",)
    max_new_tokens: int = 300
    prompts: dict[str, dict[str, str]] = field(default_factory=dict)   # {"en": {"video": "..."}} overrides
    notes: str = ""


PROFILES: dict[str, Profile] = {}


def _add(p: Profile) -> None:
    if p.name in PROFILES:
        raise ValueError(f"duplicate caption profile {p.name!r}")
    PROFILES[p.name] = p


_add(Profile(
    "qwen2.5-vl", ("qwen2.5-vl", "qwen2_5_vl", "qwen2.5vl"), frames=16, mode="video", image_size=448,
    langs=("en", "zh"), backends=("openai", "transformers"),
    notes="Video-native (dynamic resolution, absolute time encoding). vLLM/SGLang/DashScope serve it; "
          "transformers loads it with AutoModelForImageTextToText (its processor needs torchvision)."))
_add(Profile(
    "qwen2-vl", ("qwen2-vl", "qwen2_vl", "qwen2vl"), frames=8, mode="video", image_size=448,
    langs=("en", "zh"), backends=("openai", "transformers"),
    notes="Video-native; 2B/7B/72B. vLLM, SGLang, LMDeploy, DashScope (qwen-vl-max/plus) serve it; "
          "transformers loads it with AutoModelForImageTextToText (its processor needs torchvision)."))
_add(Profile(
    "qwen-vl", ("qwen-vl", "qwen_vl"), frames=4, mode="video", image_size=448, langs=("en", "zh"),
    notes="Qwen-VL(-Chat), first generation: several images per turn, remote code only -> serve it "
          "(DashScope qwen-vl-plus/max, or its authors' openai_api.py)."))
_add(Profile(
    "yi-vl", ("yi-vl", "yi_vl"), frames=6, mode="frames+summary", image_size=448, langs=("en", "zh"),
    notes="One image per conversation (LLaVA-style); its authors' code only -> server-only here. "
          "Summaries come best from a text LLM such as Yi-34B-Chat or Qwen2.5 (set the summary model)."))
_add(Profile(
    "internlm-xcomposer2-vl", ("xcomposer2", "internlm-xcomposer"), frames=6, mode="frames+summary",
    image_size=490, langs=("en", "zh"),
    notes="InternLM-XComposer2-VL-7B: remote code -> serve with LMDeploy (`lmdeploy serve api_server`). "
          "XComposer2.5 takes multi-image/video input: `--mode video` works there."))
_add(Profile(
    "cogvlm", ("cogvlm",), frames=4, mode="frames+summary", image_size=490, langs=("en",),
    notes="CogVLM / CogVLM2: one image per conversation, remote code -> serve it (its authors' "
          "openai_api_demo or LMDeploy). CogVLM2-Video is video-native: use `--mode video` with it. "
          "CogVLM2 also writes Chinese; CogVLM1 English only."))
_add(Profile(
    "minicpm-v", ("minicpm-v", "minicpm_v", "minicpm-o"), frames=8, mode="video", image_size=448,
    langs=("en", "zh"),
    notes="MiniCPM-V 2.6 takes multiple images and video; remote code -> serve with vLLM or Ollama "
          "(`ollama run minicpm-v`, base URL http://127.0.0.1:11434/v1)."))
_add(Profile(
    "video-llava", ("video-llava", "video_llava", "videollava"), frames=8, mode="video", image_size=224,
    langs=("en",), backends=("openai", "transformers"), max_new_tokens=200,
    prompts={"en": {"video": "Describe this video in detail: the subjects, their actions, the setting, the "
                             "colours and the camera motion. At most five sentences."}},
    notes="LanguageBind/Video-LLaVA-7B-hf: trained on exactly 8 frames at 224 px; English only. The "
          "transformers backend sends the frames as images (a video processor needs torchvision)."))
_add(Profile(
    "llava", ("llava",), frames=4, mode="frames+summary", image_size=336, langs=("en",),
    backends=("openai", "transformers"),
    notes="LLaVA-1.5 / LLaVA-NeXT (-hf checkpoints): single-image training, so frames+summary."))
_add(Profile(
    "generic", (), frames=8, mode="video", image_size=448, langs=("en", "zh"), backends=("openai", "transformers"),
    notes="Any other model: frames are sent as several images in one request. Use --mode frames+summary "
          "for models that take one image at a time."))


def profile_for(model: str) -> Profile:
    """The profile whose match strings occur in ``model`` (longest match wins), else ``generic``."""
    name = model.lower()
    best, best_len = PROFILES["generic"], 0
    for p in PROFILES.values():
        for m in p.match:
            if m in name and len(m) > best_len:
                best, best_len = p, len(m)
    return best
