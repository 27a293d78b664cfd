"""Caption cleaning: what turns a VLM's answer into a training caption.

Rules, in order (each one pure and separately testable):
1. strip boilerplate openings ("The video shows", "In this video,", "视频中", ...) and re-capitalise;
2. collapse degenerate loops ("a cat a cat a cat") and repeated sentences;
3. enforce length bounds: words for English, characters for Chinese; too long is cut at the last sentence
   end that fits (else at the word limit) and flagged ``truncated``; too short is a failure. A character
   cap (``CHARS_PER_UNIT`` times the unit limit) catches what the unit count misses (one 50 000-letter
   "word", Latin junk inside a Chinese caption): it cuts the same way, at a sentence end, else a space;
4. flag the wrong language (mostly CJK when English was asked for, or the reverse).

The raw answer is what the cache stores; cleaning runs again on every run, so changing these rules never
costs a request. :func:`score_text` builds the optional suffix Open-Sora appends to captions
("aesthetic score: 5.5, motion score: 3.2, fps: 25") from score columns the curation step wrote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_EN_PREFIX = re.compile(
    r"^\s*(?:"
    r"(?:in|throughout)\s+(?:this|the)\s+(?:video|clip|footage|sequence|images?|frames?)\s*(?:,|:)?"
    r"|(?:this|the)\s+(?:video|clip|footage|sequence|image|images|frames?|scene|gif)(?:\s+(?:clip|sequence))?\s+"
    r"(?:shows|show|depicts|depict|features|feature|captures|capture|presents|present|displays|display|"
    r"portrays|portray|showcases|showcase|illustrates|illustrate|begins with|starts with|opens with|is of|"
    r"appears to show|seems to show)(?:\s+that)?\s*:?"
    r"|(?:here\s+is|this\s+is)\s+an?\s+(?:video|clip|image)\s+(?:of|showing|that shows)"
    r"|(?:sure|certainly|of course)[,!.]\s*(?:here\s+is\s+(?:a|the)\s+[\w\s]{0,30}?description\s*[:.]?)?"
    r")\s*",
    re.IGNORECASE,
)
_ZH_PREFIX = re.compile(
    r"^\s*(?:在)?(?:这段|这个|该|此|本)?(?:视频|影片|短片|画面|图片|图像)(?:片段)?"
    r"(?:中|里|当中|里面)?(?:显示|展示|描绘|呈现|记录|讲述|拍摄)?(?:了|的是|出|是)?(?:的是)?[，,：:。]?\s*"
)
_ZH_PREFIX_REQUIRED = re.compile(r"^\s*(?:在)?(?:这段|这个|该|此|本)?(?:视频|影片|短片|图片|图像)")
_SENT_SPLIT = re.compile(r"(?<=[.!?。！？])\s*")
_LOOP = re.compile(r"\b(\w+(?:\W+\w+){0,7}?)(?:\W+\1\b){2,}", re.IGNORECASE)
_CJK_LOOP = re.compile(r"([\u4e00-\u9fff]{1,8}?)\1{2,}")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")

#: the character cap is this many characters per word (en) / per CJK character (zh) of the unit limit
CHARS_PER_UNIT = {"en": 12, "zh": 3}

#: Failure flags: a caption carrying one of these is recorded in caption_error, not written to `text`.
FAILING_FLAGS = ("empty", "wrong_language", "too_short")    # in order of precedence


@dataclass(frozen=True)
class CleanResult:
    text: str
    flags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def failure(self) -> str | None:
        """The most telling failing flag, or None when the caption is usable."""
        return next((f for f in FAILING_FLAGS if f in self.flags), None)


def detect_language(text: str) -> str:
    """``"zh"`` when CJK characters dominate the letters, ``"en"`` when Latin letters do, else ``"other"``."""
    cjk, latin = len(_CJK.findall(text)), len(_LATIN.findall(text))
    if cjk == 0 and latin == 0:
        return "other"
    # one CJK character carries about as much as a 3-4 letter word
    return "zh" if cjk * 3 >= latin else "en"


def strip_prefix(text: str, lang: str = "en") -> str:
    """Remove a boilerplate opening (repeatedly: "Sure! The video shows ...") and re-capitalise."""
    original = text
    for _ in range(3):
        before = text
        text = _EN_PREFIX.sub("", text, count=1)
        if _ZH_PREFIX_REQUIRED.match(text):
            text = _ZH_PREFIX.sub("", text, count=1)
        if text == before:
            break
    stripped = text.lstrip(" ,:;，：；")
    if stripped == original:
        return original
    return stripped[:1].upper() + stripped[1:]


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENT_SPLIT.split(text) if s.strip()]


def collapse_repeats(text: str) -> str:
    """Collapse phrase loops inside sentences, then drop sentences already said (order kept)."""
    text = _LOOP.sub(r"\1", text)
    text = _CJK_LOOP.sub(r"\1", text)
    seen: set[str] = set()
    out = []
    for s in split_sentences(text):
        key = re.sub(r"[\W_]+", " ", s.lower()).strip()
        if key and key in seen:
            continue
        seen.add(key)
        out.append(s)
    joiner = "" if detect_language(text) == "zh" else " "
    return joiner.join(out)


def length_units(text: str, lang: str) -> int:
    """Words for English (and others), CJK characters for Chinese."""
    return len(_CJK.findall(text)) if lang == "zh" else len(text.split())


def truncate(text: str, max_units: int, lang: str) -> str:
    """Cut at the last sentence end within ``max_units``; if none fits, cut at the limit."""
    kept: list[str] = []
    for s in split_sentences(text):
        if length_units(("" if lang == "zh" else " ").join([*kept, s]), lang) > max_units:
            break
        kept.append(s)
    if kept:
        return ("" if lang == "zh" else " ").join(kept)
    if lang == "zh":
        out, n = [], 0
        for ch in text:
            n += bool(_CJK.match(ch))
            if n > max_units:
                break
            out.append(ch)
        return "".join(out)
    return " ".join(text.split()[:max_units])


def cap_chars(text: str, max_chars: int, lang: str) -> str:
    """At most ``max_chars`` characters: whole sentences that fit, else up to the last space, else a hard cut."""
    if len(text) <= max_chars:
        return text
    joiner = "" if lang == "zh" else " "
    kept: list[str] = []
    for s in split_sentences(text):
        if len(joiner.join([*kept, s])) > max_chars:
            break
        kept.append(s)
    if kept:
        return joiner.join(kept)
    head = text[:max_chars]
    cut = head.rfind(" ")
    return head[:cut].rstrip() if cut > max_chars // 2 else head


def clean_caption(text: str | None, *, lang: str = "en", min_units: int = 3, max_units: int | None = None,
                  strip: bool = True, check_language: bool = True) -> CleanResult:
    """Apply the rules above. ``max_units`` defaults to 300 words (en) or 600 characters (zh)."""
    if max_units is None:
        max_units = 600 if lang == "zh" else 300
    flags: list[str] = []
    t = re.sub(r"\s+", " ", (text or "").replace("\u3000", " ")).strip().strip('"“”')
    if strip:
        s = strip_prefix(t, lang)
        if s != t:
            flags.append("prefix_stripped")
        t = s
    c = collapse_repeats(t)
    if c != t:
        flags.append("repetition")
    t = c
    max_chars = max_units * CHARS_PER_UNIT.get(lang, CHARS_PER_UNIT["en"])
    if length_units(t, lang) > max_units or len(t) > max_chars:
        t = cap_chars(truncate(t, max_units, lang), max_chars, lang)
        flags.append("truncated")
    if not t:
        flags.append("empty")
    elif length_units(t, lang) < min_units:
        flags.append("too_short")
    if t and check_language and lang in ("en", "zh") and detect_language(t) not in (lang, "other"):
        flags.append("wrong_language")
    return CleanResult(t, tuple(flags))


def score_text(row: dict[str, Any], *, columns: dict[str, str] | None = None, fps: bool = True) -> str:
    """Open-Sora-style score suffix from a row, e.g. ``"aesthetic score: 5.5, motion score: 3.2, fps: 25."``.

    ``columns`` maps the label to the manifest column (defaults: aesthetic <- ``aesthetic_score``, motion <-
    ``motion_score``); missing or null columns are left out; returns "" when nothing is known.
    """
    columns = columns or {"aesthetic": "aesthetic_score", "motion": "motion_score"}
    parts = []
    for label, col in columns.items():
        v = row.get(col)
        if isinstance(v, (int, float)) and v == v:
            parts.append(f"{label} score: {v:.1f}")
    if fps and isinstance(row.get("fps"), (int, float)) and row["fps"]:
        parts.append(f"fps: {row['fps']:.3g}")
    return (", ".join(parts) + ".") if parts else ""


#: a sentence per ``camera_motion`` class (soraprep.curate.score.camera.CAMERA_CLASSES)
CAMERA_PHRASES = {
    "static": "The camera is static.",
    "pan_left": "The camera pans left.",
    "pan_right": "The camera pans right.",
    "tilt_up": "The camera tilts up.",
    "tilt_down": "The camera tilts down.",
    "zoom_in": "The camera zooms in.",
    "zoom_out": "The camera zooms out.",
    "roll": "The camera rolls.",
    "shaky": "The camera is shaky.",
    "mixed": "The camera moves in several ways.",
}


def with_camera_motion(caption: str, label: str | None) -> str:
    """Append the sentence of a ``camera_motion`` class (``"A cat." -> "A cat. The camera pans left."``);
    the caption is unchanged when the label is missing or unknown."""
    return with_score_text(caption, CAMERA_PHRASES.get(label or "", ""))


def with_score_text(caption: str, suffix: str) -> str:
    if not suffix:
        return caption
    sep = "" if caption.endswith((" ", "\n")) else " "
    return f"{caption}{sep}{suffix}"
