"""The catalogue of built-in stages: the one list of modules whose import registers a stage.

The recipe loader (:mod:`soraprep.curate.recipe`) and every fresh worker process import this module, so
``STAGES`` below is complete once it is imported. None of these modules imports torch, OpenCV models or
an HTTP client at import time: heavy libraries load in each stage's ``setup()``.

To add a built-in stage: write its module (a class decorated with ``@register("name")`` from
:mod:`soraprep.stages`) and add one import line here. A stage defined outside soraprep registers when its
own module is imported (runners import it again in their workers: ``runners.supervisor.stage_modules``).
"""

from __future__ import annotations

from soraprep.caption import stage as caption_stage
from soraprep.curate import analyze, bucket, cutting, split
from soraprep.curate import filter as filter_stage
from soraprep.curate.score import clip_scores, dedup, nsfw, ocr
from soraprep.curate.score import stage as score_stage
from soraprep.stages import STAGES

#: the modules that define the built-in stages, in pipeline order (``caption`` may follow ``bucket``)
MODULES = (analyze, split, score_stage, ocr, nsfw, clip_scores, dedup, filter_stage, cutting, bucket, caption_stage)

__all__ = ["MODULES", "STAGES"]
