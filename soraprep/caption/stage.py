"""Captioning as a curation stage (recipe section ``caption:``), registered as ``"caption"``.

The dataclass fields are the recipe keys: those of :class:`~soraprep.caption.pipeline.CaptionSettings`
plus ``out_dir`` (the folder relative row paths live in, i.e. the output manifest's folder), ``batch_size``
and ``gpus``::

    caption:
      backend: openai
      model: Qwen/Qwen2-VL-7B-Instruct
      base_url: http://127.0.0.1:8000/v1
      frames: 8
      concurrency: 16

Construction is cheap and picklable (it only validates: configs fail loud, before any work); ``setup()``
builds the backend and opens the cache (default ``<out_dir>/.soraprep-cache/captions.sqlite``, so a
rerun or a resumed run costs nothing for clips already captioned) once per worker; ``__call__`` captions a
batch of rows (see :mod:`soraprep.caption.pipeline`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soraprep.caption.pipeline import Captioning, CaptionSettings, CaptionSummary
from soraprep.caption.run import default_cache_path
from soraprep.stages import Resources, register

_SETTINGS = [f.name for f in dataclasses.fields(CaptionSettings) if f.name != "storage_options"]  # curate stages see local clips


@register("caption")
@dataclass
class CaptionStage:
    backend: str = "openai"
    model: str = ""
    base_url: str | None = None
    frames: int | None = None
    mode: str | None = None
    lang: str = "en"
    concurrency: int = 8
    retry_failed: bool = False
    frame_method: str = "uniform"
    sample_fps: float | None = None
    image_size: int | None = None
    max_new_tokens: int | None = None
    summary_backend: str | None = None
    summary_model: str | None = None
    summary_base_url: str | None = None
    backend_options: dict[str, Any] = field(default_factory=dict)
    summary_backend_options: dict[str, Any] | None = None
    min_units: int = 3
    max_units: int | None = None
    clip_timeout_s: float | None = 300.0
    score_text: bool = False
    append_camera_motion: bool = False
    cache_path: str | None = None
    out_dir: str = "."              # relative row paths resolve here (the output manifest's folder)
    batch_size: int = 64
    gpus: float = 0.0               # set 1 for the transformers backend on a GPU worker
    name = "caption"
    run_args = ("out_dir",)     # the run's OUT, given by the runner (never a recipe key)
    columns = ()                # its columns are manifest.COLUMNS (caption*, text)

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("caption.model is required: a served model name or a local path / hub id")
        manifest = Path(self.out_dir) / "manifest.parquet"
        cache = self.cache_path or str(default_cache_path(manifest))
        self.settings = CaptionSettings(**{**{k: getattr(self, k) for k in _SETTINGS}, "cache_path": cache})
        Captioning(self.settings)   # validates now; raises BackendConfigError (a ValueError) with the fix
        self.resources = Resources(cpus=1.0, gpus=self.gpus, memory_gb=1.0)
        self.summary = CaptionSummary()
        self._job: Captioning | None = None

    def setup(self) -> None:
        if self._job is None:
            self._job = Captioning(self.settings)
            self._job.setup()

    def __call__(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.setup()
        assert self._job is not None
        rows, s = self._job.caption_rows(batch, manifest_path=Path(self.out_dir) / "manifest.parquet")
        for k, v in dataclasses.asdict(s).items():
            if k == "failures_by_kind":
                for kind, n in v.items():
                    self.summary.failures_by_kind[kind] = self.summary.failures_by_kind.get(kind, 0) + n
            else:
                setattr(self.summary, k, getattr(self.summary, k) + v)
        return rows

    def close(self) -> None:
        if self._job is not None:
            self._job.close()
            self._job = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_job": None}     # backends are rebuilt in each worker's setup()
