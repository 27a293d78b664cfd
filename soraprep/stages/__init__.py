"""The stage protocol and the stage registry: the neutral contract between pipeline steps and runners.

``soraprep.curate`` (its stages and runners) and ``soraprep.caption`` (its ``caption`` stage) both import
this package; it imports neither. Which modules define the built-in stages is listed once, in
:mod:`soraprep.curate.catalogue` (imported by the recipe loader).
"""

from soraprep.stages.protocol import MAX_ERROR_MESSAGE, Resources, Row, Stage, error_dict, failed
from soraprep.stages.registry import STAGES, register

__all__ = ["MAX_ERROR_MESSAGE", "STAGES", "Resources", "Row", "Stage", "error_dict", "failed", "register"]
