"""Prompt templates, English and Chinese, and the hash that ties a caption to the prompt that made it.

Three kinds of prompt:
- ``video``: all sampled frames in one request (video-native and multi-image VLMs);
- ``frame``: one frame per request, the first half of ``frames+summary`` mode;
- ``summary``: a text-only LLM request that merges the per-frame descriptions into one video caption.

Templates are ``str.format`` strings; ``{n}`` is the number of frames, ``{descriptions}`` the numbered
per-frame descriptions (summary only), ``{i}`` the 1-based frame number (frame only). A profile may
replace any of them (see :mod:`soraprep.caption.profiles`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

LANGS = ("en", "zh")

DEFAULT_PROMPTS: dict[str, dict[str, str]] = {
    "en": {
        "video": (
            "These are {n} frames sampled in order from one video clip. Write one dense paragraph that describes "
            "the clip for someone who must re-create it: the main subjects and what they do, how they move, the "
            "setting, lighting, colours, camera angle and camera motion, and the visual style. Describe only what "
            "is visible, in present tense, without mentioning frames, images or the video itself. "
            "At most six sentences."
        ),
        "frame": (
            "This is frame {i} of {n} from a video clip. Describe what is visible in detail: subjects, their "
            "appearance and pose, the setting, lighting, colours, camera angle and style. Only what is visible; "
            "three sentences at most."
        ),
        "summary": (
            "Below are descriptions of {n} frames taken in order from one video clip.\n\n{descriptions}\n\n"
            "Merge them into one dense caption of the whole clip: the subjects and what they do, how things move "
            "and change over time, the setting, lighting, colours, camera motion and style. Resolve contradictions "
            "in favour of what most frames say, drop details that appear only once and seem doubtful, and do not "
            "mention frames or descriptions. Answer with the caption only, at most six sentences."
        ),
        "system": "You are a precise video captioner. You describe only what is visible.",
    },
    "zh": {
        "video": (
            "这是从同一段视频中按时间顺序抽取的{n}帧画面。请用一段详细的中文描述这段视频，使别人能据此重新制作它："
            "主要主体及其动作、运动方式、场景、光线、色彩、镜头角度与运镜、画面风格。只描述可见内容，使用现在时，"
            "不要提及“帧”“图片”或“视频”本身。不超过六句话。"
        ),
        "frame": (
            "这是一段视频的第{i}帧（共{n}帧）。请详细描述画面中可见的内容：主体及其外观和姿态、场景、光线、色彩、"
            "镜头角度和风格。只描述可见内容，不超过三句话。"
        ),
        "summary": (
            "以下是从同一段视频中按时间顺序抽取的{n}帧画面的描述：\n\n{descriptions}\n\n"
            "请把它们合并成对整段视频的一段详细中文描述：主体及其动作、随时间的运动和变化、场景、光线、色彩、"
            "运镜与风格。描述之间有矛盾时以多数为准，删去只出现一次且可疑的细节，不要提及“帧”或“描述”。"
            "只输出描述本身，不超过六句话。"
        ),
        "system": "你是一名严谨的视频标注员，只描述画面中可见的内容。",
    },
}


@dataclass(frozen=True)
class PromptSet:
    """The prompts one run uses (after profile overrides), for one language."""

    lang: str
    video: str
    frame: str
    summary: str
    system: str | None

    def video_prompt(self, n: int) -> str:
        return self.video.format(n=n)

    def frame_prompt(self, i: int, n: int) -> str:
        return self.frame.format(i=i + 1, n=n)

    def summary_prompt(self, descriptions: list[str]) -> str:
        label = "第{}帧：" if self.lang == "zh" else "Frame {}: "
        lines = "\n".join(label.format(k + 1) + d.strip() for k, d in enumerate(descriptions))
        return self.summary.format(n=len(descriptions), descriptions=lines)


def prompt_set(lang: str, overrides: dict[str, dict[str, str]] | None = None, *, system: bool = True) -> PromptSet:
    """Default prompts for ``lang`` with a profile's overrides (``{"en": {"video": "..."}}``) applied."""
    if lang not in LANGS:
        raise ValueError(f"unsupported caption language {lang!r}; choose one of {', '.join(LANGS)}")
    p = dict(DEFAULT_PROMPTS[lang])
    p.update((overrides or {}).get(lang, {}))
    return PromptSet(lang=lang, video=p["video"], frame=p["frame"], summary=p["summary"],
                     system=p["system"] if system else None)


def prompt_hash(prompts: PromptSet, **settings: object) -> str:
    """16 hex digits identifying the prompts *and* every setting that changes the answer (mode, frames,
    image size, token limit, summary model). Written to ``caption_prompt_hash`` and part of the cache key."""
    blob = json.dumps({"prompts": asdict(prompts), **settings}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
