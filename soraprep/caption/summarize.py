"""The two ways to caption one clip from its frames.

- ``video``: every sampled frame goes into one request with the video prompt; the answer is the caption.
- ``frames+summary``: one request per frame with the frame prompt (sent together, so a server batches them),
  then one text-only request to an LLM (``llm``, which may be a different model or backend) that merges the
  numbered descriptions into one dense caption. A single frame needs no merge.

A clip fails as a whole when any of its requests fails (after the backend's retries): a caption built from
some of the frames would silently differ from a rerun's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from soraprep.caption.backends import Captioner, VLMReply, VLMRequest
from soraprep.caption.clean import strip_prefix
from soraprep.caption.prompts import PromptSet


@dataclass
class ClipOutcome:
    """Raw result for one clip, summed over its requests."""

    text: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    requests: int = 0
    attempts: int = 0
    latency_s: float = 0.0            # wall seconds from the first request to the last answer
    error_kind: str | None = None
    error_message: str | None = None
    descriptions: list[str] = field(default_factory=list)

    def add(self, replies: Sequence[VLMReply]) -> VLMReply | None:
        """Account for ``replies``; return the first failed one, if any."""
        self.requests += len(replies)
        for r in replies:
            self.tokens_in += r.tokens_in
            self.tokens_out += r.tokens_out
            self.attempts += r.attempts
        return next((r for r in replies if not r.ok), None)


def caption_clip(frames: Sequence[np.ndarray], *, mode: str, prompts: PromptSet, vlm: Captioner,
                 llm: Captioner | None = None, max_new_tokens: int = 300, tag: str = "",
                 timeout_s: float | None = None) -> ClipOutcome:
    """Caption one clip's frames with ``mode``; never raises for a failing request.

    ``timeout_s`` is each request's budget, all its retries and back-offs included (HTTP backends honour
    it): the clip in ``video`` mode; in ``frames+summary`` the frame requests (sent together), then the merge.
    """
    t0 = time.perf_counter()
    out = ClipOutcome()
    n = len(frames)
    if mode == "video":
        replies = vlm.generate([VLMRequest(prompts.video_prompt(n), tuple(frames), prompts.system,
                                           max_new_tokens, tag=tag, timeout_s=timeout_s)])
        failed = out.add(replies)
        if failed is None:
            out.text = replies[0].text
    elif mode == "frames+summary":
        reqs = [VLMRequest(prompts.frame_prompt(i, n), (f,), prompts.system, max_new_tokens, tag=f"{tag}/f{i}",
                           timeout_s=timeout_s) for i, f in enumerate(frames)]
        replies = vlm.generate(reqs)
        failed = out.add(replies)
        if failed is None:
            out.descriptions = [strip_prefix((r.text or "").strip(), prompts.lang) for r in replies]
            if n == 1:
                out.text = out.descriptions[0]
            else:
                merge = (llm or vlm).generate([VLMRequest(prompts.summary_prompt(out.descriptions), (), prompts.system,
                                                          max_new_tokens, tag=f"{tag}/summary", timeout_s=timeout_s)])
                failed = out.add(merge)
                if failed is None:
                    out.text = merge[0].text
    else:
        raise ValueError(f"unknown caption mode {mode!r}")
    if failed is not None:
        out.error_kind, out.error_message = failed.error_kind, failed.error_message
    out.latency_s = time.perf_counter() - t0
    return out

