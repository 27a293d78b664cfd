"""The Ray runner's plan (no cluster needed): which stages run in which pool, what each pool asks for, and
the recipe's ``resources:`` section (checked like every other recipe section, never part of fingerprints)."""

from __future__ import annotations

import pytest
import yaml

from soraprep.curate.recipe import RecipeError, load_recipe, validate
from soraprep.curate.runners.ray_plan import GIB, check_fits, plan


def _recipe(tmp_path, data):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_recipe(path)


def _pools(rec, tmp_path, workers=4):
    return plan(rec, rec.build(tmp_path), workers)


def test_default_recipe_is_an_analysis_pool_then_a_decision_pool(tmp_path):
    pools = _pools(load_recipe(), tmp_path)
    assert [(p.kind, p.stages) for p in pools] == [("analysis", ("probe", "analyze", "split", "score")),
                                                  ("decision", ("filter", "cut", "bucket"))]
    analysis, decision = pools
    assert (analysis.cpus, analysis.gpus, analysis.concurrency) == (1.0, 0.0, 4)  # --workers analysis actors
    assert decision.concurrency == 2
    assert analysis.remote_args() == {"num_cpus": 1.0, "concurrency": 4, "batch_size": 1, "memory": GIB}


def test_model_stages_get_their_own_pools_with_declared_and_overridden_resources(tmp_path):
    pytest.importorskip("rapidocr")
    rec = _recipe(tmp_path, {"ocr": {}, "phash": {}, "caption": {"model": "m", "base_url": "http://127.0.0.1:1/v1"},
                             "resources": {"ocr": {"gpus": 0.5, "batch_size": 64, "concurrency": [1, 4]},
                                           "analyze": {"memory_gb": 2, "concurrency": 8},
                                           "caption": {"cpus": 2}}})
    pools = {p.name: p for p in _pools(rec, tmp_path)}
    assert list(pools) == ["analysis", "ocr", "phash", "decision"]
    ocr = pools["ocr"]
    assert (ocr.cpus, ocr.gpus, ocr.memory_gb, ocr.batch_size, ocr.concurrency) == (1.0, 0.5, 1.0, 64, (1, 4))
    assert ocr.units_per_batch == 8 and ocr.remote_args()["num_gpus"] == 0.5
    assert (pools["phash"].cpus, pools["phash"].batch_size, pools["phash"].concurrency) == (0.1, 256, 1)
    assert (pools["analysis"].memory_gb, pools["analysis"].concurrency) == (2.0, 8)
    assert pools["decision"].stages == ("filter", "cut", "bucket", "caption")  # caption runs after cutting
    assert pools["decision"].cpus == 2.0


def test_resources_never_change_fingerprints_or_the_recipe_hash(tmp_path):
    plain = load_recipe()
    rec = _recipe(tmp_path, {"resources": {"analyze": {"cpus": 2, "concurrency": 16}, "cut": {"cpus": 0.5}}})
    assert rec.resources == {"analyze": {"cpus": 2, "concurrency": 16}, "cut": {"cpus": 0.5}}
    assert rec.fingerprints() == plain.fingerprints() and rec.hash == plain.hash
    assert rec.with_overrides(cut={"mode": "exact"}).resources == rec.resources
    assert "resources" in yaml.safe_load(rec.to_yaml())  # the manifest records where it ran
    again = {k: v for k, v in yaml.safe_load(rec.to_yaml()).items() if k != "version"}
    assert validate(again, "again").resources == rec.resources


@pytest.mark.parametrize("resources, message", [
    ({"analyse": {"cpus": 1}}, "resources.analyse: no stage 'analyse' in this recipe (did you mean 'analyze'?)"),
    ({"ocr": {"gpus": 1}}, "resources.ocr: no stage 'ocr' in this recipe"),
    ({"cut": {"gpu": 1}}, "unknown key resources.cut.gpu (did you mean 'gpus'?)"),
    ({"cut": {"cpus": -1}}, "resources.cut.cpus must be a number >= 0"),
    ({"cut": {"gpus": "one"}}, "resources.cut.gpus must be a number >= 0"),
    ({"cut": {"memory_gb": 0}}, "resources.cut.memory_gb must be a number of GiB > 0"),
    ({"cut": {"batch_size": 0}}, "resources.cut.batch_size must be a whole number of clips >= 1"),
    ({"cut": {"concurrency": 0}}, "resources.cut.concurrency must be a number of actors >= 1 or [min, max]"),
    ({"cut": {"concurrency": [4, 2]}}, "resources.cut.concurrency must be a number of actors >= 1 or [min, max]"),
    ({"cut": {"concurrency": [1, 2, 3]}}, "resources.cut.concurrency must be"),
    ({"cut": 2}, "resources.cut must be a mapping of cpus, gpus, memory_gb, concurrency, batch_size"),
    ([1, 2], "resources must map stage names to settings"),
])
def test_resources_section_errors_say_how_to_fix_them(tmp_path, resources, message):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"resources": resources}))
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert message in str(err.value)


def test_a_global_stage_takes_no_resources(tmp_path):
    with pytest.raises(RecipeError, match="runs once on the driver over all rows"):
        _recipe(tmp_path, {"phash": {}, "dedup": {}, "resources": {"dedup": {"cpus": 1}}})


def test_a_cluster_too_small_for_the_pools_fails_loud(tmp_path):
    pools = _pools(load_recipe(), tmp_path, workers=4)  # 4 analysis x 1 CPU + 2 decision x 1 CPU
    check_fits(pools, {"CPU": 6.0}, "default")
    with pytest.raises(RecipeError, match=r"needs 6 CPUs for its smallest actor pools \(analysis 4x1 CPU, "
                                          r"decision 2x1 CPU\) but the cluster has 4: lower --workers"):
        check_fits(pools, {"CPU": 4.0}, "default")
    rec = _recipe(tmp_path, {"resources": {"cut": {"gpus": 1}}})
    with pytest.raises(RecipeError, match="needs 2 GPUs .* but the cluster has 0"):
        check_fits(_pools(rec, tmp_path), {"CPU": 64.0}, "r.yaml")
