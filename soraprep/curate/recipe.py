"""Recipes: YAML whose sections are stage names and whose keys are those stages' constructor arguments.

Everything is checked before any video is touched: unknown sections or keys (with a "did you mean"),
wrong types, impossible thresholds. A bad recipe raises :class:`RecipeError` with a message that says
how to fix it; the CLI turns it into exit code 2.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import typing
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from soraprep.caption import stage as _caption_stage  # noqa: F401  (registers "caption"; imports no torch)
from soraprep.curate import analyze, bucket, cutting, split  # noqa: F401  (register stages)
from soraprep.curate import filter as _filter  # noqa: F401
from soraprep.curate.registry import STAGES
from soraprep.curate.score import clip_scores, dedup, ocr  # noqa: F401  (model-based scorers; import no torch)
from soraprep.curate.score import stage as _score_stage  # noqa: F401

#: Curation stages in pipeline order; any other registered stage (e.g. caption) may follow `bucket`.
PIPELINE = ("probe", "analyze", "split", "score", "filter", "cut", "bucket")
BUILTIN = ("default", "opensora-like")


class RecipeError(ValueError):
    """A recipe that cannot run; the message says how to fix it."""


@dataclass(frozen=True)
class Recipe:
    sections: dict[str, dict[str, Any]]
    source: str = "default"

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.sections, sort_keys=True).encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        return yaml.safe_dump({"version": 1, **self.sections}, sort_keys=False)

    def with_overrides(self, **section_updates: dict[str, Any]) -> Recipe:
        sections = copy.deepcopy(self.sections)
        for name, upd in section_updates.items():
            sections.setdefault(name, {}).update(upd)
        return validate(sections, self.source)

    def stage_kwargs(self, name: str) -> dict[str, Any]:
        kw = dict(self.sections.get(name, {}))
        if name == "score":  # the score stage aggregates what analyze's scorers gathered
            kw = {"scorers": self.sections.get("analyze", {}).get("scorers", {})}
        elif name == "filter":  # the section *is* the rule set: {column: {min, max}}
            kw = {"rules": kw}
        elif name == "split" and "keyframe_split_s" not in kw:
            # stream-copy cuts: split a scene at its first keyframe when that is more than max_snap_s in,
            # so only the head is re-encoded (exact and none cuts need no such split)
            cut = self.sections.get("cut", {})
            if cut.get("mode", "copy") in ("copy", "keyframe") and cut.get("fallback_exact", True):
                kw["keyframe_split_s"] = float(cut.get("max_snap_s", 1.0))
        return kw

    def build(self, out_dir: str | Path) -> list:
        """Instantiate the stages (cheap; heavy work happens in each stage's ``setup()``)."""
        stages = []
        for name in self.stage_names():
            kw = self.stage_kwargs(name)
            if name == "analyze":  # model-based scorers need sampled frames from the one decode pass
                wanted = [getattr(STAGES[n], "samples_every_s", 0) for n in self.stage_names()]
                wanted = [w for w in wanted if w]
                if wanted and not kw.get("sample_every_s"):
                    kw["sample_every_s"] = min(wanted)
            if "out_dir" in {f.name for f in fields(STAGES[name])}:
                kw["out_dir"] = str(out_dir)  # cut writes there; caption resolves relative clip paths there
            stages.append(STAGES[name](**kw))
        return stages

    def stage_names(self) -> list[str]:
        """Pipeline order: extra stages with ``phase = "score"`` (model-based scorers) run right after
        ``score`` so filters can threshold their columns; others (e.g. ``caption``) run after ``bucket``."""
        extra = [s for s in self.sections if s not in PIPELINE and s not in self.global_stage_names()]
        scorers = [s for s in extra if getattr(STAGES[s], "phase", "post") == "score"]
        post = [s for s in extra if s not in scorers]
        names = list(PIPELINE)
        i = names.index("score") + 1
        return names[:i] + scorers + names[i:] + post

    def global_stage_names(self) -> list[str]:
        """Stages with ``phase = "global"`` (e.g. ``dedup``) see every row at once: the pipeline runs them
        after all units, never per unit (see pipeline.apply_global)."""
        return [s for s in self.sections if getattr(STAGES.get(s), "phase", "post") == "global"]


def load_recipe(spec: str | Path | None = None) -> Recipe:
    """A built-in recipe by name (``default``, ``opensora-like``) or a YAML file path."""
    spec = spec or "default"
    if str(spec) in BUILTIN:
        text = resources.files("soraprep.recipes").joinpath(f"{spec}.yaml").read_text()
        source = str(spec)
    else:
        path = Path(spec)
        if not path.exists():
            raise RecipeError(f"recipe {spec!r} not found: give a YAML file or one of {', '.join(BUILTIN)}")
        text, source = path.read_text(encoding="utf-8"), str(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a mapping of stage name -> settings")
    version = data.pop("version", 1)
    if version != 1:
        raise RecipeError(f"{source}: recipe version {version} is not supported (this soraprep reads version 1)")
    return validate(data, source)


def _suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def validate(sections: dict[str, Any], source: str = "recipe") -> Recipe:
    sections = copy.deepcopy(sections)
    for name, body in sections.items():
        if name not in STAGES or name in ("probe",):
            raise RecipeError(f"{source}: unknown section {name!r}{_suggest(name, STAGES)}; "
                              f"sections are: {', '.join(s for s in STAGES if s not in ('probe', 'score'))}")
        if body is None:
            sections[name] = {}
        elif not isinstance(body, dict):
            raise RecipeError(f"{source}: section {name!r} must be a mapping of settings, got {body!r}")
    recipe = Recipe(sections, source)
    for name in recipe.stage_names() + recipe.global_stage_names():
        cls = STAGES[name]
        for need in getattr(cls, "requires", ()):  # e.g. dedup compares the hashes the phash stage writes
            if need not in sections:
                raise RecipeError(f"{source}: section {name!r} needs section {need!r}: add `{need}: {{}}`")
        kw = recipe.stage_kwargs(name)
        known = {f.name for f in fields(cls)} - {"out_dir"}
        hints = typing.get_type_hints(cls)
        for key, value in kw.items():
            if key not in known:
                raise RecipeError(f"{source}: unknown key {name}.{key}{_suggest(key, known)}; "
                                  f"valid keys: {', '.join(sorted(known))}")
            if not _type_ok(value, hints.get(key, Any)):
                raise RecipeError(f"{source}: {name}.{key} should be {hints[key]}, got {value!r}")
        try:
            cls(**kw)
        except (TypeError, ValueError) as exc:
            raise RecipeError(f"{source}: {exc}") from exc
    return recipe
