"""Recipe keys are constructor arguments: one rule for every registered stage, no loader special cases.

Each stage's section keys are its dataclass fields; what it needs from other sections it declares
(``recipe_inputs``), the runner's arguments are ``run_args``, and ``filter`` takes its section whole.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass

import pytest

from soraprep.curate.recipe import RecipeError, load_recipe, validate
from soraprep.stages import STAGES

ALL_STAGES = sorted(STAGES)


@pytest.mark.parametrize("name", ALL_STAGES)
def test_stage_declarations_name_constructor_arguments(name):
    cls = STAGES[name]
    assert is_dataclass(cls), f"{name}: a stage is a dataclass whose fields are its recipe keys"
    names = {f.name for f in fields(cls)}
    assert set(getattr(cls, "run_args", ())) <= names
    if getattr(cls, "section_arg", None):
        assert cls.section_arg in names
    derive = getattr(cls, "recipe_inputs", None)
    if derive is not None:
        sections = dict(load_recipe("opensora-like").sections)
        sections.update(ocr={}, phash={})
        assert set(derive(sections)) <= names - set(getattr(cls, "run_args", ()))


@pytest.mark.parametrize("recipe", ["default", "opensora-like"])
def test_built_stages_hold_exactly_their_arguments(recipe, tmp_path):
    rec = load_recipe(recipe).with_overrides(ocr={})
    for stage in rec.build(tmp_path):
        kw = rec.stage_kwargs(stage.name)
        for key, value in kw.items():
            assert getattr(stage, key) == value, f"{stage.name}.{key}"
        own = rec.sections.get(stage.name) or {}
        if getattr(type(stage), "section_arg", None) is None:
            assert set(own) <= set(kw), f"every key of section {stage.name!r} reaches its constructor"
        if "out_dir" in getattr(type(stage), "run_args", ()):
            assert stage.out_dir == str(tmp_path)


def test_derived_arguments_come_from_the_declaring_stage():
    rec = load_recipe("default")
    assert rec.stage_kwargs("score") == {"scorers": rec.sections["analyze"]["scorers"]}
    assert rec.stage_kwargs("filter") == {"rules": rec.sections["filter"]}
    assert rec.stage_kwargs("split")["keyframe_split_s"] == 1.0
    assert rec.stage_kwargs("split")["min_part_s"] == 1.0  # filter.duration_s.min
    assert "sample_every_s" not in rec.stage_kwargs("analyze")  # no stage reads sampled frames
    assert rec.with_overrides(ocr={}).stage_kwargs("analyze")["sample_every_s"] == 1.0
    # the stage's own section wins over what it derives
    assert rec.with_overrides(split={"keyframe_split_s": 2.5}).stage_kwargs("split")["keyframe_split_s"] == 2.5
    assert rec.with_overrides(ocr={}, analyze={"sample_every_s": 0.5}).stage_kwargs("analyze")["sample_every_s"] == 0.5


def test_contradictions_fail_loud():
    rec = load_recipe("default")
    with pytest.raises(RecipeError, match="score.*takes no settings.*analyze.scorers"):
        validate({**rec.sections, "score": {"scorers": {"motion": {}}}})
    with pytest.raises(RecipeError, match="sample_every_s is 0.*ocr"):
        rec.with_overrides(ocr={}, analyze={"sample_every_s": 0})
    with pytest.raises(RecipeError, match="unknown key split.out_dir"):
        rec.with_overrides(split={"out_dir": "/tmp"})
    with pytest.raises(RecipeError, match="unknown key cut.out_dir"):
        rec.with_overrides(cut={"out_dir": "/elsewhere"})  # a run argument, never a recipe key
