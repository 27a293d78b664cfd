"""Moved to :mod:`soraprep.stages` (neutral ground for curate and caption); kept so that stage modules
written against the old path still import. New code imports ``soraprep.stages``."""

from soraprep.stages.registry import STAGES, register

__all__ = ["STAGES", "register"]
