"""Video captioning: frames -> vision-language model (-> LLM summary) -> cleaned caption columns.

Front door::

    from soraprep.caption import CaptionSettings, caption_manifest
    summary = caption_manifest("manifest.parquet", settings=CaptionSettings(backend="openai", model="Qwen/Qwen2-VL-7B-Instruct",
                               base_url="http://127.0.0.1:8000/v1"))

Light on import: httpx and torch are imported by the backend that needs them.
"""

from soraprep.caption.pipeline import CAPTION_COLUMNS, Captioning, CaptionSettings, CaptionSummary
from soraprep.caption.run import caption_manifest, default_cache_path

__all__ = ["CAPTION_COLUMNS", "CaptionSettings", "CaptionSummary", "Captioning", "caption_manifest",
           "default_cache_path"]
