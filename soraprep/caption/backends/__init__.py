"""The Captioner protocol: one narrow contract between the captioning pipeline and its backends.

A backend turns :class:`VLMRequest` (a prompt plus zero or more RGB frames) into :class:`VLMReply`
(text plus token usage, latency and, when it failed, an error kind). ``generate`` is thread-safe and never
raises for a failing request: the failure is in the reply, so one bad clip never stops a run. Text-only
requests (no images) serve the summary step of ``frames+summary`` mode.

Backends register under a name (``BACKENDS``) and are imported lazily by :func:`make_captioner`, so
``import soraprep.caption`` pulls neither httpx nor torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: backend name -> "module:Class" (imported on first use; the module may need an optional extra)
BACKENDS: dict[str, str] = {
    "openai": "soraprep.caption.backends.openai_compat:OpenAICompatCaptioner",
    "transformers": "soraprep.caption.backends.transformers_local:TransformersCaptioner",
}


@dataclass(frozen=True)
class VLMRequest:
    """One generation request: a user prompt and the frames it talks about (RGB uint8, (H, W, 3))."""

    prompt: str
    images: tuple[np.ndarray, ...] = ()
    system: str | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    tag: str = ""                     # for logs only (e.g. "clip-0001/frame3")
    timeout_s: float | None = None    # the whole request's budget: attempts, back-offs (HTTP backends)


@dataclass(frozen=True)
class VLMReply:
    """What came back. ``text`` is None exactly when ``error_kind`` is set."""

    text: str | None
    tokens_in: int = 0
    tokens_out: int = 0
    latency_s: float = 0.0            # wall seconds for this request, retries and back-off included
    attempts: int = 1                 # HTTP attempts (1 for local backends)
    error_kind: str | None = None     # rate_limited | server_error | timeout | connection_failed | bad_request | ...
    error_message: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error_kind is None


@runtime_checkable
class Captioner(Protocol):
    """What the pipeline needs from a backend."""

    backend: str          # registry name, written to the manifest's caption_backend column
    model: str            # model name / path, written to caption_model
    parallelism: int      # how many clips the pipeline should keep in flight for this backend

    def generate(self, requests: Sequence[VLMRequest]) -> list[VLMReply]: ...

    def close(self) -> None: ...


class BackendConfigError(ValueError):
    """A backend that cannot be built as configured (unknown name, missing extra, bad option)."""


def make_captioner(backend: str, **kwargs: Any) -> Captioner:
    """Build a registered backend by name with its keyword arguments (``model=...`` and backend options)."""
    if backend not in BACKENDS:
        raise BackendConfigError(f"unknown caption backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    module_name, cls_name = BACKENDS[backend].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendConfigError(f"the {backend!r} caption backend needs an optional dependency ({exc.name}): "
                                 "pip install 'soraprep[caption]'") from exc
    return getattr(module, cls_name)(**kwargs)
