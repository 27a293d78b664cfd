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
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from soraprep.curate.catalogue import STAGES  # the built-in stages, all registered

#: Curation stages in pipeline order; any other registered stage (e.g. caption) may follow `bucket`.
PIPELINE = ("probe", "analyze", "split", "score", "filter", "cut", "bucket")
BUILTIN = ("default", "opensora-like")
MAX_RECIPE_BYTES = 1 << 20
MAX_NODES = 100_000  # values in a recipe once YAML aliases are expanded
#: bump when probe/analyze/split/score write other values for the same settings: reruns then re-analyse
ANALYSIS_VERSION = 3  # 2: damaged_frames; 3: glitch guard, split_reason, transitions in no clip, camera + static v2, VFR spans


#: settings that change where or how fast a stage runs, not what it writes: left out of fingerprints
_EXECUTION_ONLY = {"device", "images_per_batch", "torch_threads", "threads", "concurrency", "cache_path"}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RecipeError(ValueError):
    """A recipe that cannot run; the message says how to fix it."""


@dataclass(frozen=True)
class Recipe:
    sections: dict[str, dict[str, Any]]
    source: str = "default"
    #: the ``resources:`` section: stage -> {cpus, gpus, memory_gb, concurrency, batch_size} for cluster
    #: runners. Where work runs, not what it computes: kept out of ``sections``, ``hash`` and fingerprints.
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.sections, sort_keys=True).encode()).hexdigest()[:16]

    def to_yaml(self) -> str:
        extra = {"resources": self.resources} if self.resources else {}
        return yaml.safe_dump({"version": 1, **self.sections, **extra}, sort_keys=False)

    def with_overrides(self, **section_updates: dict[str, Any]) -> Recipe:
        sections = copy.deepcopy(self.sections)
        for name, upd in section_updates.items():
            sections.setdefault(name, {}).update(upd)
        if self.resources:
            sections[RESOURCES] = copy.deepcopy(self.resources)
        return validate(sections, self.source)

    def stage_kwargs(self, name: str) -> dict[str, Any]:
        """The constructor arguments of stage ``name`` (run arguments such as ``out_dir`` aside): its own
        section's keys, over what the stage derives from the other sections (``recipe_inputs``); a stage
        with ``section_arg`` takes its whole section as that one argument (``filter``: ``rules``)."""
        cls = STAGES[name]
        own = dict(self.sections.get(name) or {})
        if getattr(cls, "section_arg", None):
            own = {cls.section_arg: own}
        derive = getattr(cls, "recipe_inputs", None)
        return {**(derive(self.sections) if derive else {}), **own}

    def analysis_stage_names(self) -> list[str]:
        """The per-video stages that decode or score (probe ... model scorers): redoing them costs a decode."""
        names = self.stage_names()
        return names[: names.index("filter")]

    def decision_stage_names(self) -> list[str]:
        """The per-video stages that decide over stored columns (filter, cut, bucket, then e.g. caption)."""
        names = self.stage_names()
        return names[names.index("filter"):]

    def fingerprints(self) -> dict[str, str]:
        """Stage -> hash of everything it runs with; analysis stages also hash :data:`ANALYSIS_VERSION`.
        Plus ``analysis`` and ``decision``: the hashes of each part's stages (what a rerun compares)."""
        fps = {name: _digest({"stage": name, "kwargs": {k: v for k, v in self.stage_kwargs(name).items()
                                                        if k not in _EXECUTION_ONLY},
                              "version": ANALYSIS_VERSION if name in self.analysis_stage_names() else 0})
               for name in self.stage_names()}
        for part, names in (("analysis", self.analysis_stage_names()), ("decision", self.decision_stage_names())):
            fps[part] = _digest({n: fps[n] for n in names})
        return fps

    def build(self, out_dir: str | Path) -> list:
        """Instantiate the stages (cheap; heavy work happens in each stage's ``setup()``)."""
        stages = []
        for name in self.stage_names():
            kw = self.stage_kwargs(name)
            if "out_dir" in getattr(STAGES[name], "run_args", ()):
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
    """A built-in recipe by name (``default``, ``opensora-like``) or a YAML file path.

    A recipe *file* is laid over a base recipe (``base:``, default ``default``; ``none`` = the stages'
    built-in settings): see :func:`overlay` for the one rule.
    """
    spec = spec or "default"
    if str(spec) in BUILTIN:
        return validate(_builtin_sections(str(spec)), str(spec))
    path = Path(spec)
    if not path.is_file():
        raise RecipeError(f"recipe {spec!r} not found: give a YAML file or one of {', '.join(BUILTIN)}")
    source = str(path)
    raw = path.read_bytes()
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError(f"{source}: {len(raw)} bytes is too large for a recipe (at most {MAX_RECIPE_BYTES})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{source}: not UTF-8 text (byte {exc.start}); save the recipe as UTF-8") from exc
    data = _parse(text, source)
    base = data.pop("base", "default")
    if base not in (*BUILTIN, "none"):
        raise RecipeError(f"{source}: base {base!r} is not a recipe; use one of {', '.join(BUILTIN)}, none")
    sections = {} if base == "none" else _builtin_sections(base)
    return validate(overlay(sections, data, source), source)


def _builtin_sections(name: str) -> dict[str, Any]:
    data = yaml.safe_load(resources.files("soraprep.recipes").joinpath(f"{name}.yaml").read_text())
    data.pop("version", None)
    return data


def _parse(text: str, source: str) -> dict[str, Any]:
    """YAML -> mapping; refuses documents whose aliases expand past MAX_NODES (a "billion laughs")."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None and _expanded_size(root, {}) > MAX_NODES:
            raise RecipeError(f"{source}: its YAML aliases expand to more than {MAX_NODES} values; "
                              "write the settings out instead of nesting aliases")
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise RecipeError(f"{source}: not valid YAML: {' '.join(str(exc).split())}") from exc
    except RecursionError as exc:
        raise RecipeError(f"{source}: nested too deeply to be a recipe") from exc
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a mapping of stage name -> settings")
    version = data.pop("version", 1)
    if version != 1:
        raise RecipeError(f"{source}: recipe version {version} is not supported (this soraprep reads version 1)")
    return data


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Values in ``node`` once every alias is expanded (memoised: linear in the document, not the expansion)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = MAX_NODES + 1  # a node reached again while being counted: a recursive alias
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo) for v in node.value)
    else:
        size = 1
    memo[id(node)] = min(size, MAX_NODES + 1)
    return memo[id(node)]


def overlay(base: dict[str, Any], over: dict[str, Any], source: str = "recipe") -> dict[str, Any]:
    """The one rule for recipe files: the file overrides the keys it names, on top of ``base``.

    * A section the file leaves out (or leaves empty) keeps the base's settings.
    * A key the file names replaces the base's value for that key, as a whole (``detector: {name:
      content}`` is the whole detector; ``split: {max_clip_s: null}`` sets it to null).
    * ``false`` removes an optional stage the base runs (``nsfw: false``); the core stages cannot be removed.
    * ``filter`` (keys are columns) and ``analyze.scorers`` (keys are scorers) merge rule by rule: a rule
      or scorer the file names replaces the base's; ``null`` removes it (``filter: {motion_score: null}``).
    """
    out = copy.deepcopy(base)
    for name, body in over.items():
        if body is None:
            out.setdefault(name, {})
            continue
        if body is False and name not in PIPELINE:  # `nsfw: false`: the base's optional stage does not run
            out.pop(name, None)
            continue
        if not isinstance(body, dict):
            out[name] = body  # validate() says what is wrong with it
            continue
        section = out.setdefault(name, {})
        if not isinstance(section, dict):
            out[name] = section = {}
        for key, value in body.items():
            if name == "filter":  # keys are columns: each rule replaced whole, null removes
                _merge_named(section, key, value)
            elif name == "analyze" and key == "scorers" and isinstance(value, dict) \
                    and isinstance(section.get("scorers"), dict):
                for scorer, params in value.items():
                    _merge_named(section["scorers"], scorer, params)
            else:
                section[key] = copy.deepcopy(value)
    return out


def _merge_named(target: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        target.pop(key, None)
    else:
        target[key] = copy.deepcopy(value)


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
    resources = sections.pop(RESOURCES, None)
    for name, body in sections.items():
        bad = [k for k in [name, *(body if isinstance(body, dict) else ())] if not isinstance(k, str)]
        if bad:
            raise RecipeError(f"{source}: {bad[0]!r} is not a name: recipe sections and their keys are text")
        if name not in STAGES or name in ("probe",):
            raise RecipeError(f"{source}: unknown section {name!r}{_suggest(name, STAGES)}; "
                              f"sections are: {', '.join(s for s in STAGES if s not in ('probe', 'score'))}")
        if getattr(STAGES[name], "settings", True) is False and body:
            raise RecipeError(f"{source}: section {name!r} takes no settings (it aggregates what `analyze.scorers` "
                              f"gathers): configure the scorers under analyze.scorers and remove `{name}:`")
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
        try:
            kw = recipe.stage_kwargs(name)
        except (TypeError, ValueError) as exc:
            raise RecipeError(f"{source}: {exc}") from exc
        known = {f.name for f in fields(cls)} - set(getattr(cls, "run_args", ()))
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
    if resources is not None:
        recipe = Recipe(sections, source, _check_resources(recipe, resources, source))
    return recipe


#: the top-level section of per-stage resource overrides (not a stage)
RESOURCES = "resources"
RESOURCE_KEYS = ("cpus", "gpus", "memory_gb", "concurrency", "batch_size")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_resources(recipe: Recipe, body: Any, source: str) -> dict[str, dict[str, Any]]:
    """The ``resources:`` section, checked: stage -> overrides of its declared ``Resources``/``batch_size``."""
    example = "e.g. `resources: {analyze: {cpus: 1, concurrency: 8}, ocr: {gpus: 0.5, batch_size: 32}}`"
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise RecipeError(f"{source}: resources must map stage names to settings, {example}; got {body!r}")
    stages = recipe.stage_names()
    out: dict[str, dict[str, Any]] = {}
    for name, spec in body.items():
        if name in recipe.global_stage_names():
            raise RecipeError(f"{source}: resources.{name}: {name!r} runs once on the driver over all rows; "
                              f"remove it from resources (it takes none)")
        if name not in stages:
            raise RecipeError(f"{source}: resources.{name}: no stage {name!r} in this recipe{_suggest(str(name), stages)}; "
                              f"stages: {', '.join(stages)}")
        if spec is None:
            continue
        if not isinstance(spec, dict):
            raise RecipeError(f"{source}: resources.{name} must be a mapping of {', '.join(RESOURCE_KEYS)}, {example}; "
                              f"got {spec!r}")
        for key, value in spec.items():
            where = f"{source}: resources.{name}.{key}"
            if key not in RESOURCE_KEYS:
                raise RecipeError(f"{source}: unknown key resources.{name}.{key}{_suggest(str(key), RESOURCE_KEYS)}; "
                                  f"valid keys: {', '.join(RESOURCE_KEYS)}")
            if key in ("cpus", "gpus") and not (_number(value) and value >= 0):
                raise RecipeError(f"{where} must be a number >= 0 (fractions share a device, e.g. 0.25), got {value!r}")
            if key == "memory_gb" and not (_number(value) and value > 0):
                raise RecipeError(f"{where} must be a number of GiB > 0, got {value!r}")
            if key == "batch_size" and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise RecipeError(f"{where} must be a whole number of clips >= 1, got {value!r}")
            if key == "concurrency":
                pair = isinstance(value, (list, tuple)) and len(value) == 2
                ints = [v for v in (value if pair else [value]) if isinstance(v, int) and not isinstance(v, bool)]
                if len(ints) != (2 if pair else 1) or min(ints) < 1 or (pair and ints[0] > ints[1]):
                    raise RecipeError(f"{where} must be a number of actors >= 1 or [min, max] with 1 <= min <= max "
                                      f"(an autoscaling pool), got {value!r}")
                spec = {**spec, key: list(value) if pair else value}
        out[name] = dict(spec)
    return out


#: columns the pipeline itself writes besides manifest.COLUMNS and the scorers' columns
_PIPELINE_COLUMNS = {"decode_note", "damaged_frames", "dup_of", "is_duplicate"}


def check_filter_columns(recipe: Recipe, available: set[str] | None = None) -> None:
    """Fail (before any work) on a filter rule over a column nothing will write.

    Known: the manifest's fixed columns, ``short_side``, the columns of the recipe's scorers and stages,
    and ``available`` (the columns of the input manifests, or of the manifest being re-thresholded).
    A stage that does not declare its ``columns`` may write anything: then nothing is checked.
    """
    from soraprep.curate.filter import DERIVED
    from soraprep.curate.score.base import SCORERS
    from soraprep.manifest import COLUMNS

    known = set(COLUMNS) | set(DERIVED) | _PIPELINE_COLUMNS | set(available or ())
    for name in (recipe.sections.get("analyze", {}).get("scorers") or {}):
        known |= set(getattr(SCORERS.get(name), "columns", ()))
    for name in recipe.stage_names() + recipe.global_stage_names():
        if name in PIPELINE:
            continue
        cols = getattr(STAGES[name], "columns", None)
        if cols is None:
            return
        known |= set(cols)
    for col in recipe.sections.get("filter", {}):
        if col not in known:
            raise RecipeError(f"{recipe.source}: filter.{col}: no stage or input writes a column {col!r}"
                              f"{_suggest(col, known)}; fix the name, add the stage that writes it, "
                              f"or remove the rule with `{col}: null`")
