"""Moved to :mod:`soraprep.stages` (neutral ground for curate and caption); kept so that stage modules
written against the old path still import. New code imports ``soraprep.stages``."""

from soraprep.stages.protocol import MAX_ERROR_MESSAGE, Resources, Row, Stage, error_dict, failed

__all__ = ["MAX_ERROR_MESSAGE", "Resources", "Row", "Stage", "error_dict", "failed"]
