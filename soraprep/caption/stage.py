"""Captioning as a curation stage (recipe section ``caption:``), registered as ``"caption"``.

Recipe keys are the constructor arguments (the fields of :class:`CaptionSettings` plus ``manifest_path``,
``batch_size`` and ``gpus``)::

    caption:
      backend: openai
      model: Qwen/Qwen2-VL-7B-Instruct
      base_url: http://127.0.0.1:8000/v1
      frames: 8
      concurrency: 16
      cache_path: out/.soraprep-cache/captions.sqlite

Construction is cheap and picklable (it only validates); ``setup()`` builds the backend and opens the cache
once per worker; ``__call__`` captions a batch of rows (see :mod:`soraprep.caption.pipeline`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from soraprep.caption.pipeline import Captioning, CaptionSettings, CaptionSummary
from soraprep.caption.run import default_cache_path
from soraprep.curate.registry import register
from soraprep.curate.stage import Resources

_FIELDS = {f.name for f in dataclasses.fields(CaptionSettings)}


@register("caption")
class CaptionStage:
    name = "caption"

    def __init__(self, *, backend: str, model: str, manifest_path: str | None = None, batch_size: int = 64,
                 gpus: float = 0.0, **settings: Any) -> None:
        unknown = sorted(set(settings) - _FIELDS)
        if unknown:
            raise ValueError(f"unknown caption option(s) {unknown}; valid: {sorted(_FIELDS | {'manifest_path', 'batch_size', 'gpus'})}")
        self.manifest_path = manifest_path or "manifest.parquet"   # relative row paths resolve beside it
        if settings.get("cache_path") is None:   # a resumable cache by default, beside the manifest
            settings["cache_path"] = str(default_cache_path(self.manifest_path))
        self.settings = CaptionSettings(backend=backend, model=model, **settings)
        self._job = Captioning(self.settings)     # validates now: configs fail loud, before any work
        self._job_ready = False
        self.batch_size = batch_size
        self.resources = Resources(cpus=1.0, gpus=gpus, memory_gb=1.0)
        self.summary = CaptionSummary()

    def setup(self) -> None:
        self._job.setup()
        self._job_ready = True

    def __call__(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not self._job_ready:
            self.setup()
        rows, s = self._job.caption_rows(batch, manifest_path=self.manifest_path)
        for k, v in dataclasses.asdict(s).items():
            if k == "failures_by_kind":
                for kind, n in v.items():
                    self.summary.failures_by_kind[kind] = self.summary.failures_by_kind.get(kind, 0) + n
            else:
                setattr(self.summary, k, getattr(self.summary, k) + v)
        return rows

    def close(self) -> None:
        self._job.close()
        self._job_ready = False

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_job"] = None
        state["_job_ready"] = False
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._job = Captioning(self.settings)
