"""Caption manifest rows: frames -> VLM (-> LLM summary) -> clean -> caption columns, cached and resumable.

Rows whose ``keep`` is not false and that carry no curation ``error`` are captioned; every other row passes
through untouched. Each captioned row gets:

=====================  ==========================================================================
caption                cleaned caption (plus the optional score text); also written to ``text``
caption_model          the VLM (``"vlm + llm"`` when a separate model writes the summary)
caption_backend        ``openai`` | ``transformers``
caption_prompt_hash    hash of the prompts and every setting that changes the answer
caption_frames         number of frames the model saw
caption_tokens_in/out  token usage summed over the clip's requests (as the backend reports it)
caption_latency_s      wall seconds the clip's requests took (from the cache on a cache hit)
caption_error          ``{stage: "caption", kind, message}`` or null; ``text`` is left alone then
=====================  ==========================================================================

Each clip's request has a budget (``clip_timeout_s``) over all its attempts and back-offs: a hung server
costs a clip that long, not ``max_attempts`` request timeouts (``frames+summary``: the frame requests, sent
together, then the merge request, each with that budget). Captions longer than ``max_units`` are cut at
the last sentence end that fits (else at a word boundary); the summary counts them (``truncated``).

Clips run on a thread pool (``parallelism`` of the backend: HTTP concurrency or the local batch size), each
committed to the :class:`~soraprep.caption.cache.CaptionCache` as soon as it finishes.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

from soraprep.caption.backends import BACKENDS, BackendConfigError, Captioner, make_captioner
from soraprep.caption.cache import CaptionCache, FileDigests, cache_key
from soraprep.caption.clean import clean_caption, score_text, with_camera_motion, with_score_text
from soraprep.caption.frames import METHODS, clip_span, load_frames, select_frames
from soraprep.caption.profiles import MODES, profile_for
from soraprep.caption.prompts import LANGS, prompt_hash, prompt_set
from soraprep.caption.summarize import caption_clip
from soraprep.manifest import resolve_path
from soraprep.manifest_store import resolve
from soraprep.stages import error_dict
from soraprep.storage.store import LOCAL_SCHEMES, is_remote, local_copy, url_scheme

STAGE = "caption"
CAPTION_COLUMNS = ("caption", "caption_model", "caption_backend", "caption_prompt_hash", "caption_frames",
                   "caption_tokens_in", "caption_tokens_out", "caption_latency_s", "caption_error")


@dataclass(frozen=True)
class CaptionSettings:
    """Everything one captioning run needs. ``None`` means "the model's profile decides"."""

    backend: str
    model: str
    base_url: str | None = None              # openai backend; default http://127.0.0.1:8000/v1
    frames: int | None = None
    mode: str | None = None                  # "video" | "frames+summary"
    lang: str = "en"
    concurrency: int = 8                     # openai: requests in flight; transformers: batch size
    retry_failed: bool = False
    frame_method: str = "uniform"            # "uniform" | "scenes" | "fps"
    sample_fps: float | None = None          # for frame_method="fps"
    image_size: int | None = None            # short side in px
    max_new_tokens: int | None = None
    summary_backend: str | None = None       # frames+summary: a different LLM for the merge step
    summary_model: str | None = None
    summary_base_url: str | None = None
    backend_options: dict[str, Any] = field(default_factory=dict)   # e.g. device, dtype, timeout_s, max_attempts
    summary_backend_options: dict[str, Any] | None = None          # default: backend_options if same backend
    min_units: int = 3                       # shortest usable caption: words (en) / characters (zh)
    max_units: int | None = None             # longest: default 300 words / 600 characters
    clip_timeout_s: float | None = 300.0     # per clip request, all retries and back-offs; None: no limit
    score_text: bool = False                 # append "aesthetic score: ..., motion score: ..., fps: ..."
    append_camera_motion: bool = False       # append e.g. " The camera pans left." from the camera_motion column
    cache_path: str | None = None            # SQLite file; None keeps the cache in memory
    storage_options: dict[str, Any] = field(default_factory=dict)  # clips on a store (s3://...): fsspec options

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise BackendConfigError(f"unknown backend {self.backend!r}; choose one of: {', '.join(BACKENDS)}")
        if not self.model:
            raise BackendConfigError("a model is required (--model NAME, a served model name or a local path)")
        if self.mode is not None and self.mode not in MODES:
            raise BackendConfigError(f"unknown mode {self.mode!r}; choose one of: {', '.join(MODES)}")
        if self.lang not in LANGS:
            raise BackendConfigError(f"unknown language {self.lang!r}; choose one of: {', '.join(LANGS)}")
        if self.frames is not None and self.frames < 1:
            raise BackendConfigError(f"frames must be >= 1 (got {self.frames})")
        if self.concurrency < 1:
            raise BackendConfigError(f"concurrency must be >= 1 (got {self.concurrency})")
        if self.frame_method not in METHODS:
            raise BackendConfigError(f"unknown frame method {self.frame_method!r}; choose one of: {', '.join(METHODS)}")
        if self.frame_method == "fps" and not self.sample_fps:
            raise BackendConfigError("frame_method 'fps' needs sample_fps (frames per second to sample)")
        if self.clip_timeout_s is not None and not self.clip_timeout_s > 0:
            raise BackendConfigError(f"the clip timeout must be > 0 s (got {self.clip_timeout_s})")
        if self.max_units is not None and self.max_units < max(1, self.min_units):
            raise BackendConfigError(f"the longest caption ({self.max_units}) must be at least the shortest "
                                     f"({self.min_units}) and >= 1")
        if self.summary_backend is not None and self.summary_backend not in BACKENDS:
            raise BackendConfigError(f"unknown summary backend {self.summary_backend!r}")


@dataclass
class CaptionSummary:
    rows: int = 0
    eligible: int = 0
    captioned: int = 0          # new captions this run
    cached: int = 0             # answered from the cache (no request)
    previous: int = 0           # kept as the input manifest had them (same model and prompt)
    failed: int = 0
    truncated: int = 0          # captions cut to the length limit (kept, flagged here)
    failures_by_kind: dict[str, int] = field(default_factory=dict)
    requests: int = 0           # model requests (frames + summaries)
    attempts: int = 0           # HTTP attempts, retries included
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0

    @property
    def captions_per_s(self) -> float:
        return self.captioned / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "captions_per_s": round(self.captions_per_s, 3)}


class Captioning:
    """A configured captioning run. Cheap to build (validates); :meth:`setup` builds the backends."""

    def __init__(self, settings: CaptionSettings) -> None:
        settings.validate()
        self.settings = s = settings
        self.profile = profile_for(s.model)
        if s.backend not in self.profile.backends:
            raise BackendConfigError(
                f"{s.model!r} matches the {self.profile.name!r} profile, which runs on "
                f"{' / '.join(self.profile.backends)} only (its authors' remote code): serve it with an "
                f"OpenAI-compatible server and use --backend openai")
        self.frames = s.frames or self.profile.frames
        self.mode = s.mode or self.profile.mode
        self.image_size = s.image_size or self.profile.image_size
        self.max_new_tokens = s.max_new_tokens or self.profile.max_new_tokens
        self.prompts = prompt_set(s.lang, self.profile.prompts)
        summary_model = (s.summary_model or s.model) if self.mode == "frames+summary" else None
        self.prompt_hash = prompt_hash(self.prompts, mode=self.mode, frames=self.frames, image_size=self.image_size,
                                       max_new_tokens=self.max_new_tokens, frame_method=s.frame_method,
                                       sample_fps=s.sample_fps, summary_model=summary_model)
        self.vlm: Captioner | None = None
        self.llm: Captioner | None = None
        self.cache: CaptionCache | None = None
        self._digests = FileDigests()

    # -- lifecycle -----------------------------------------------------------------------------------
    def setup(self) -> None:
        s = self.settings
        if self.vlm is None:
            self.vlm = make_captioner(s.backend, **self._backend_kwargs(s.backend, s.model, s.base_url,
                                                                        s.backend_options))
        if self.llm is None and self.mode == "frames+summary" and (s.summary_model or s.summary_backend):
            backend = s.summary_backend or s.backend
            options = s.summary_backend_options
            if options is None:
                options = s.backend_options if backend == s.backend else {}
            self.llm = make_captioner(backend, **self._backend_kwargs(
                backend, s.summary_model or s.model, s.summary_base_url or s.base_url, options))
        if self.cache is None:
            self.cache = CaptionCache(s.cache_path)

    def _backend_kwargs(self, backend: str, model: str, base_url: str | None,
                        options: dict[str, Any]) -> dict[str, Any]:
        kw: dict[str, Any] = {"model": model, **options}
        if backend == "openai":
            kw["concurrency"] = self.settings.concurrency
            if base_url:
                kw["base_url"] = base_url
        else:
            kw["batch_size"] = self.settings.concurrency
        return kw

    def close(self) -> None:
        for c in (self.vlm, self.llm):
            if c is not None:
                c.close()
        if self.cache is not None:
            self.cache.close()
        self.vlm = self.llm = self.cache = None

    @property
    def model_label(self) -> str:
        s = self.settings
        return s.model if self.llm is None else f"{s.model} + {s.summary_model or s.model}"

    # -- rows ----------------------------------------------------------------------------------------
    @staticmethod
    def eligible(row: dict[str, Any]) -> bool:
        return row.get("keep") is not False and not row.get("error")

    def caption_rows(self, rows: list[dict[str, Any]], *, manifest_path: str | os.PathLike,
                     progress: Callable[[int, int], None] | None = None) -> tuple[list[dict[str, Any]], CaptionSummary]:
        """Caption ``rows`` (paths relative to ``manifest_path``'s folder); returns new rows and a summary."""
        self.setup()
        assert self.vlm is not None
        t0 = time.perf_counter()
        summary = CaptionSummary(rows=len(rows))
        lock = threading.Lock()
        out = [dict(r) for r in rows]
        todo = [i for i, r in enumerate(rows) if self.eligible(r)]
        summary.eligible = len(todo)
        done = 0

        def finish(i: int, cols: dict[str, Any], how: str, stats: dict[str, int]) -> None:
            nonlocal done
            truncated = bool(cols.pop("_truncated", False))
            with lock:
                out[i].update(cols)
                err = out[i].get("caption_error")
                if err:
                    summary.failed += 1
                    kind = err.get("kind", "error") if isinstance(err, dict) else "error"
                    summary.failures_by_kind[kind] = summary.failures_by_kind.get(kind, 0) + 1
                elif how in ("captioned", "cached", "previous"):
                    setattr(summary, how, getattr(summary, how) + 1)
                    summary.truncated += truncated
                for k, v in stats.items():
                    setattr(summary, k, getattr(summary, k) + v)
                done += 1
                if progress is not None:
                    progress(done, len(todo))

        workers = max(1, self.vlm.parallelism)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="caption-clip") as pool:
            pending: dict[Future, int] = {}
            for i in todo:
                pending[pool.submit(self._caption_one, rows[i], manifest_path)] = i
                while len(pending) >= 2 * workers:
                    self._drain(pending, finish)
            while pending:
                self._drain(pending, finish)
        summary.seconds = time.perf_counter() - t0
        return out, summary

    @staticmethod
    def _drain(pending: dict[Future, int], finish) -> None:
        done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
        for f in done:
            i = pending.pop(f)
            cols, how, stats = f.result()
            finish(i, cols, how, stats)

    def _caption_one(self, row: dict[str, Any], manifest_path) -> tuple[dict[str, Any], str, dict[str, int]]:
        """One clip -> (columns to set, how it was answered, request stats). Never raises for a row."""
        try:
            return self._caption_one_inner(row, manifest_path)
        except Exception as exc:  # a bug or an unexpected file must not stop the run: record it on the row
            return self._error_cols("internal_error", f"{type(exc).__name__}: {exc}", frames=0), "error", {}

    def _caption_one_inner(self, row, manifest_path):
        if not row.get("path"):
            return self._error_cols("missing_path", "row has no path", frames=0), "error", {}
        if is_remote(str(manifest_path)):   # a manifest on a store: relative paths are relative to its folder
            path = resolve(str(manifest_path).rstrip("/").rsplit("/", 1)[0], row["path"])
        else:
            path = resolve_path(manifest_path, row["path"])
        if url_scheme(path) not in (None, "http", "https", *LOCAL_SCHEMES):
            # a clip on an object store: staged to local scratch for the duration of the clip (frame reads seek)
            try:
                with local_copy(path, self.settings.storage_options) as local:
                    return self._caption_path(row, str(local))
            except FileNotFoundError:
                return self._error_cols("missing_file", f"no such file: {path}", frames=0), "error", {}
        return self._caption_path(row, path)

    def _caption_path(self, row, path: str):
        s = self.settings
        assert self.vlm is not None and self.cache is not None
        if "://" not in path and not os.path.exists(path):
            return self._error_cols("missing_file", f"no such file: {path}", frames=0), "error", {}
        from soraprep.video.io import VideoError

        try:
            start, end = clip_span(row, path)
            indices = select_frames(start, end, n=self.frames, method=s.frame_method, fps=row.get("fps"),
                                    sample_fps=s.sample_fps, cuts=row.get("scene_cuts"), path=path)
        except VideoError as exc:
            return self._error_cols(exc.kind, exc.message, frames=0), "error", {}
        content = f"url:{path}" if "://" in path else self._digests(path)   # remote sources: identity is the URL
        key = cache_key(content=content, span=(start, end), model=self.model_label,
                        prompt_hash=self.prompt_hash, frames=indices)
        rec = self.cache.get(key)
        if rec is not None and (rec["status"] == "ok" or not s.retry_failed):
            return self._columns(row, rec), "cached", {}
        prev = self._previous(row)
        if rec is None and prev is not None:
            return {}, "previous", {}
        if not indices:
            return self._error_cols("empty_clip", f"span [{start}, {end}) has no frames", frames=0), "error", {}
        try:
            frames = load_frames(path, indices, size=self.image_size)
        except VideoError as exc:
            rec = {"status": "error", "error_kind": exc.kind, "error_message": exc.message, "frames": len(indices)}
            self.cache.put(key, rec)
            return self._columns(row, rec), "captioned", {}
        o = caption_clip(frames, mode=self.mode, prompts=self.prompts, vlm=self.vlm, llm=self.llm,
                         max_new_tokens=self.max_new_tokens, tag=str(row.get("clip_id", "")),
                         timeout_s=s.clip_timeout_s)
        rec = {"status": "ok" if o.error_kind is None else "error", "raw": o.text, "frames": len(indices),
               "frame_indices": indices, "tokens_in": o.tokens_in, "tokens_out": o.tokens_out,
               "latency_s": round(o.latency_s, 4), "requests": o.requests, "attempts": o.attempts,
               "error_kind": o.error_kind, "error_message": o.error_message, "descriptions": o.descriptions,
               "created": time.time()}
        self.cache.put(key, rec)   # committed: a kill -9 from here on loses nothing for this clip
        stats = {"requests": o.requests, "attempts": o.attempts, "tokens_in": o.tokens_in, "tokens_out": o.tokens_out}
        return self._columns(row, rec), "captioned", stats

    def _previous(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """The input row's own caption result when it came from this model and prompt (cache lost/moved)."""
        if row.get("caption_model") != self.model_label or row.get("caption_prompt_hash") != self.prompt_hash:
            return None
        if row.get("caption_error"):
            return None if self.settings.retry_failed else row
        return row if row.get("caption") else None

    def _base_cols(self, frames: int) -> dict[str, Any]:
        assert self.vlm is not None
        return {"caption_model": self.model_label, "caption_backend": self.vlm.backend,
                "caption_prompt_hash": self.prompt_hash, "caption_frames": frames}

    def _error_cols(self, kind: str, message: str, *, frames: int, caption: str | None = None,
                    rec: dict[str, Any] | None = None) -> dict[str, Any]:
        rec = rec or {}
        return {"caption": caption, **self._base_cols(frames), "caption_tokens_in": rec.get("tokens_in"),
                "caption_tokens_out": rec.get("tokens_out"), "caption_latency_s": rec.get("latency_s"),
                "caption_error": error_dict(STAGE, kind, message)}

    def _columns(self, row: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
        s = self.settings
        if rec["status"] != "ok":
            return self._error_cols(rec.get("error_kind") or "error", rec.get("error_message") or "",
                                    frames=rec.get("frames", 0), rec=rec)
        c = clean_caption(rec.get("raw"), lang=s.lang, min_units=s.min_units, max_units=s.max_units)
        if c.failure:
            return self._error_cols(c.failure, f"cleaned caption flagged {', '.join(c.flags)}: {c.text[:200]!r}",
                                    frames=rec["frames"], caption=c.text or None, rec=rec)
        caption = with_camera_motion(c.text, row.get("camera_motion")) if s.append_camera_motion else c.text
        caption = with_score_text(caption, score_text(row)) if s.score_text else caption
        return {"_truncated": "truncated" in c.flags, "caption": caption, "text": caption, **self._base_cols(rec["frames"]),
                "caption_tokens_in": rec.get("tokens_in"), "caption_tokens_out": rec.get("tokens_out"),
                "caption_latency_s": rec.get("latency_s"), "caption_error": None}

