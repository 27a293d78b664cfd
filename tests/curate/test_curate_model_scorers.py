"""Model-based scorer stages (ocr, aesthetic, text_match, phash + global dedup) on generated clips.

Ground truth comes from the generator: the "text" shot draws three subtitle lines, other shots none; a
re-encoded (smaller, lower quality) copy of a video is a near-duplicate of it, another seed is not.
CLIP and the aesthetic head are tiny random models with the real architectures, saved to a temp dir and
loaded through the same path a user's weights take (no download).
"""

import importlib.util
import json
import pickle
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from soraprep.cli import app
from soraprep.curate.pipeline import curate, rethreshold
from soraprep.curate.recipe import RecipeError, validate
from soraprep.curate.score.dedup import DedupStage, PhashStage, first_duplicates, hamming, phash
from soraprep.curate.score.ocr import OcrStage, text_area
from soraprep.manifest import read_manifest
from soraprep.stages import error_dict
from soraprep.video.synth import Shot, make_video, shot_frames

try:  # phash, dedup and OCR need no torch: their tests run without it (only the CLIP ones skip)
    import torch
except ImportError:
    torch = None


def _importable(name: str) -> bool:
    if name in sys.modules:
        return sys.modules[name] is not None  # None: import blocked
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


needs_ocr = pytest.mark.skipif(not _importable("rapidocr"), reason="needs rapidocr (pip install 'soraprep[ocr]')")


@pytest.fixture(scope="module", autouse=True)
def _restore_torch_threads():
    if torch is None:
        yield
        return
    n = torch.get_num_threads()  # the CLIP stages set one thread per worker process; give pytest its own back
    yield
    torch.set_num_threads(n)


def _jpeg(rgb: np.ndarray, short_side: int = 224) -> bytes:
    h, w = rgb.shape[:2]
    s = short_side / min(h, w)
    bgr = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
    return cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()


def _row(kind: str, seed: int, n: int = 2, **extra) -> dict:
    frames = list(shot_frames(Shot(n * 10, kind, seed=seed), 0, 320, 240))
    return {"clip_id": f"{kind}-{seed}", "_samples": [(i * 10, _jpeg(frames[i * 10])) for i in range(n)], **extra}


def _reencode(src, dst, *, width: int, height: int, crf: int) -> None:
    """A lower-quality, rescaled copy of ``src`` (what a re-upload of the same footage looks like)."""
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": str(crf)}
        for i, frame in enumerate(inp.decode(video=0)):
            f = av.VideoFrame.from_ndarray(frame.to_ndarray(width=width, height=height, format="rgb24"), format="rgb24")
            f.pts = i
            out.mux(stream.encode(f))
        out.mux(stream.encode())


# --- tiny random CLIP + aesthetic head, saved like real weights ---------------------------------------

def _tiny_clip(root):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizerFast
    from transformers.models.clip import image_processing_pil_clip

    from soraprep.curate.score.clip_scores import build_aesthetic_head

    special = ["<|startoftext|>", "<|endoftext|>", "<unk>"]
    tk = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
    tk.normalizer, tk.pre_tokenizer = normalizers.Lowercase(), pre_tokenizers.Whitespace()
    corpus = ["a photo of a red cat", "subtitle line text on a blue sky", "a dog runs in the park"] * 4
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=150, special_tokens=special, end_of_word_suffix="</w>"))
    tk.post_processor = processors.TemplateProcessing(single="<|startoftext|> $A <|endoftext|>",
                                                      special_tokens=[(s, tk.token_to_id(s)) for s in special[:2]])
    tok = CLIPTokenizerFast(tokenizer_object=tk, bos_token=special[0], eos_token=special[1], unk_token="<unk>",
                            pad_token=special[1])
    cfg = CLIPConfig(
        text_config=dict(vocab_size=tk.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=32, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    model_dir = root / "tiny-clip"
    CLIPModel(cfg).save_pretrained(model_dir)
    ip = image_processing_pil_clip.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=ip, tokenizer=tok).save_pretrained(model_dir)
    head = build_aesthetic_head(16)
    torch.manual_seed(1)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.5)
    torch.save(head.state_dict(), root / "head.pth")
    return model_dir, root / "head.pth"


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    return _tiny_clip(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("scorer_videos")
    make_video(d / "a_text.mp4", [Shot(40, "text", speed=2, seed=3), Shot(40, "moving", speed=3, seed=4)])
    make_video(d / "b_orig.mp4", [Shot(40, "moving", speed=3, seed=7)])
    make_video(d / "c_other.mp4", [Shot(40, "moving", speed=3, seed=99)])
    _reencode(d / "b_orig.mp4", d / "d_copy.mp4", width=256, height=192, crf=35)
    return d


# --- pure functions: known answers ---------------------------------------------------------------

def test_text_area_is_union_of_boxes():
    box = np.array([[10, 10], [30, 10], [30, 20], [10, 20]], np.float32)  # 21 x 11 pixels filled
    assert text_area(None, 100, 100) == 0.0
    assert text_area(box[None], 100, 100) == pytest.approx(21 * 11 / 1e4)
    assert text_area(np.stack([box, box]), 100, 100) == pytest.approx(21 * 11 / 1e4)  # overlap counts once


def test_phash_identical_reencoded_and_different():
    a = next(iter(shot_frames(Shot(1, seed=7), 0, 320, 240)))
    b = next(iter(shot_frames(Shot(1, seed=8), 0, 320, 240)))
    small = cv2.imdecode(np.frombuffer(cv2.imencode(".jpg", cv2.resize(a, (160, 120)), [cv2.IMWRITE_JPEG_QUALITY, 30])[1],
                                       np.uint8), cv2.IMREAD_COLOR)
    assert phash(a) == phash(a.copy())
    assert hamming(phash(a), phash(small)) <= 4
    assert hamming(phash(a), phash(b)) > 16


def test_first_duplicates_matches_brute_force():
    rng = np.random.default_rng(0)
    base = [int(x) for x in rng.integers(0, 2**63, 200, dtype=np.int64)]
    hashes = base + [h ^ (1 << int(rng.integers(64))) ^ (1 << int(rng.integers(64))) for h in base[:50]] + [None]
    for k in (0, 2, 6):
        want = [None if h is None else next((j for j in range(i) if hashes[j] is not None
                                              and hamming(h, hashes[j]) <= k), None) for i, h in enumerate(hashes)]
        assert first_duplicates(hashes, k) == want
    got = first_duplicates(hashes, 2)
    assert got[200:250] == list(range(50)) and got[:200] == [None] * 200


# --- stages on rows with known content ------------------------------------------------------------

@needs_ocr
def test_ocr_stage_finds_subtitles_and_only_them():
    stage = OcrStage(frames=2)
    bad = {"clip_id": "bad", "_samples": [(0, b"not a jpeg")]}
    failed = {"clip_id": "failed", "error": error_dict("analyze", "x", "y"), "_samples": [(0, b"")]}
    # fine noise over the whole frame: the detector returns one frame-sized "text" region, which is dropped
    noise = next(iter(shot_frames(Shot(1, seed=0), 0, 1280, 720)))
    assert stage.text_boxes(cv2.imdecode(np.frombuffer(_jpeg(noise), np.uint8), 1)) is None
    v1 = OcrStage(max_box_ratio=1.0, recognize=False)  # detection only, no area cap: the region is there
    assert len(v1.text_boxes(cv2.imdecode(np.frombuffer(_jpeg(noise), np.uint8), 1))) == 1
    rows = stage([_row("text", 3), _row("moving", 4), _row("black", 5), bad, failed])
    text, plain, black = rows[:3]
    assert text["ocr_boxes"] == 3 and text["ocr_boxes_mean"] == 3.0  # three subtitle lines on every frame
    assert 0.05 < text["ocr_area_ratio"] < 0.5 and text["ocr_area_ratio_mean"] <= text["ocr_area_ratio"]
    for r in (plain, black):
        assert r["ocr_boxes"] == 0 and r["ocr_area_ratio"] == 0.0
    assert rows[3]["error"]["stage"] == "ocr" and "ocr_area_ratio" not in rows[3]
    assert rows[4]["error"]["stage"] == "analyze" and "ocr_area_ratio" not in rows[4]  # passes through untouched
    prov = json.loads(text["provenance"])["ocr_area_ratio"]
    assert prov["by"] == "soraprep.ocr@2" and prov["params"]["det_side"] == 320


def test_clip_stages_match_a_direct_computation(clip_weights):
    from transformers import AutoModel, AutoProcessor

    from soraprep.curate.score.clip_scores import AestheticStage, TextMatchStage, load_aesthetic_head

    model_dir, head = clip_weights
    rows = [_row("moving", 4, n=3, text="a red cat"), _row("text", 3, n=1, text=None), _row("moving", 9, text="")]
    aes = AestheticStage(model=str(model_dir), head=str(head), frames=2)
    tm = TextMatchStage(model=str(model_dir))
    rows = tm(aes(rows))
    # the same model and frames embed each frame once: a second text_match stage reuses the embeddings
    again = TextMatchStage(model=str(model_dir))
    again.setup()
    again.embed_images = None  # would raise if called
    assert [r["text_match"] for r in again([dict(r) for r in rows])] == [r["text_match"] for r in rows]
    # the same numbers computed by hand from the saved weights
    model, proc = AutoModel.from_pretrained(model_dir).eval(), AutoProcessor.from_pretrained(model_dir)
    mlp = load_aesthetic_head(head)
    imgs = [cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1] for _, b in rows[0]["_samples"]]
    with torch.no_grad():
        def feats(out):
            return torch.nn.functional.normalize(out if hasattr(out, "shape") else out.pooler_output, dim=-1)
        im = feats(model.get_image_features(pixel_values=proc(images=imgs, return_tensors="pt")["pixel_values"]))
        tx = feats(model.get_text_features(**proc(text=["a red cat"], return_tensors="pt")))
        want_aes = mlp.layers(im[[0, 2]]).mean().item()  # frames=2 picks the first and the last sample
        want_tm = (im @ tx[0]).mean().item()  # text_match uses its default frames=4: all three samples
    # float32 sums in another order differ by a few ulps, so relative tolerances: the random head's aesthetic
    # score lies near -1047, where one float32 ulp is 1.2e-4 (measured: 2 ulps apart); a cosine lies in [-1, 1]
    assert rows[0]["aesthetic"] == pytest.approx(want_aes, rel=1e-5, abs=1e-6)
    assert rows[0]["text_match"] == pytest.approx(want_tm, rel=1e-5, abs=1e-6)
    assert rows[1]["text_match"] is None and rows[2]["text_match"] is None  # no text -> null
    assert all(isinstance(r["aesthetic"], float) for r in rows)
    prov = json.loads(rows[0]["provenance"])
    assert prov["aesthetic"]["params"]["model"] == str(model_dir) and len(prov["aesthetic"]["params"]["head_sha256"]) == 16
    assert prov["text_match"]["by"] == "soraprep.text_match@1"


@needs_ocr
def test_stage_protocol_picklable_and_setup_once(clip_weights):
    from soraprep.curate.score.clip_scores import AestheticStage

    model_dir, head = clip_weights
    for stage in (OcrStage(), AestheticStage(model=str(model_dir), head=str(head)), PhashStage(), DedupStage()):
        assert stage.resources.cpus > 0 and stage.batch_size >= 1
        clone = pickle.loads(pickle.dumps(stage))  # cheap config, shipped to workers before setup()
        assert clone == stage
    aes = AestheticStage(model=str(model_dir), head=str(head))
    aes.setup()
    loaded = aes._m["model"]
    aes([_row("moving", 4)])
    aes.setup()
    assert aes._m["model"] is loaded  # setup is idempotent: weights load once per worker
    shipped = pickle.loads(pickle.dumps(aes))
    assert shipped._m == {} and len(pickle.dumps(aes)) < 2000  # never ships loaded weights
    ocr = OcrStage()
    ocr.setup()
    engine = ocr._engine
    ocr([_row("moving", 4)])
    assert ocr._engine is engine and pickle.loads(pickle.dumps(ocr))._engine is None


def test_torch_free_config_errors_say_how_to_fix():
    cases = [
        ({"ocr": {"frames": 0}}, "ocr.frames must be between 1 and 64"),
        ({"ocr": {"det_side": 8}}, "ocr.det_side must be between 32 and 2048"),
        ({"ocr": {"det_sid": 320}}, "did you mean 'det_side'"),
        ({"ocr": {"max_box_ratio": 0}}, "ocr.max_box_ratio is a share of the frame in (0, 1]"),
        ({"dedup": {}}, "needs section 'phash'"),
        ({"phash": {}, "dedup": {"max_hamming": 40}}, "dedup.max_hamming is a number of differing bits in 0..32"),
    ]
    for sections, msg in cases:
        with pytest.raises(RecipeError) as e:
            validate(sections)
        assert msg in str(e.value), (sections, str(e.value))


def test_config_errors_say_how_to_fix(clip_weights, tmp_path):
    model_dir, head = clip_weights
    cases = [
        ({"aesthetic": {"model": str(model_dir)}}, "sac+logos+ava1-l14-linearMSE.pth"),
        ({"aesthetic": {"model": str(model_dir), "head": str(tmp_path / "h.bin")}}, ".pth/.pt"),
        ({"aesthetic": {"model": str(model_dir), "head": str(tmp_path / "missing.pth")}}, "does not exist"),
        ({"text_match": {}}, "e.g. model: openai/clip-vit-large-patch14"),
        ({"text_match": {"model": "/nonexistent/clip"}}, "does not exist"),
        ({"text_match": {"model": str(tmp_path)}}, "has no config.json"),
        ({"text_match": {"model": str(model_dir), "dtype": "fp8"}}, "dtype must be one of"),
    ]
    for sections, msg in cases:
        with pytest.raises(RecipeError) as e:
            validate(sections)
        assert msg in str(e.value), (sections, str(e.value))
    # what only loading can tell (a head that does not fit the model) fails setup, which stops the run
    # before any work (exit code 2) with the pair of weights that go together
    from soraprep.curate.score.clip_scores import AestheticStage, build_aesthetic_head

    torch.save(build_aesthetic_head(768).state_dict(), tmp_path / "l14.pth")
    with pytest.raises(ValueError, match="expects 768-d embeddings but .* gives 16-d"):
        AestheticStage(model=str(model_dir), head=str(tmp_path / "l14.pth")).setup()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"aesthetic": {"model": str(model_dir), "head": str(tmp_path / "l14.pth")}}))
    res = CliRunner().invoke(app, ["curate", str(tmp_path / "none.mp4"), "-o", str(tmp_path / "o"), "--recipe",
                                   str(recipe), "-q", "--no-report"])
    assert res.exit_code == 2 and "sac+logos+ava1-l14-linearMSE.pth goes with" in res.output, res.output


# --- end to end through `soraprep curate` ---------------------------------------------------------

def _recipe(tmp_path, model_dir, head, **filters):
    spec = {
        "analyze": {"detector": {"name": "content"}},
        "ocr": {"frames": 2},
        "aesthetic": {"model": str(model_dir), "head": str(head), "frames": 2},
        "text_match": {"model": str(model_dir), "frames": 2},
        "phash": {},
        "dedup": {"max_hamming": 6},
        "filter": {"duration_s": {"min": 1.0}, "ocr_area_ratio": {"max": 0.02}, "is_duplicate": {"max": 0}, **filters},
        "cut": {"mode": "none"},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _by_name(rows):
    return {f"{Path(r['source']).stem}-{r['clip_index']}": r for r in rows}


@needs_ocr
def test_curate_ocr_phash_dedup_without_model_weights(videos, tmp_path):
    """The torch-free scorers end to end through the CLI (this test also runs where torch is absent)."""
    spec = {"analyze": {"detector": {"name": "content"}}, "ocr": {"frames": 2}, "phash": {},
            "dedup": {"max_hamming": 6}, "cut": {"mode": "none"},
            "filter": {"duration_s": {"min": 1.0}, "ocr_area_ratio": {"max": 0.02}, "is_duplicate": {"max": 0}}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(spec))
    inputs = [str(videos / n) for n in ("a_text.mp4", "b_orig.mp4", "c_other.mp4", "d_copy.mp4")]
    res = CliRunner().invoke(app, ["curate", *inputs, "-o", str(tmp_path / "out"), "--recipe",
                                   str(tmp_path / "r.yaml"), "-q", "--no-report"])
    assert res.exit_code == 0, res.output
    by = _by_name(read_manifest(tmp_path / "out" / "manifest.parquet"))
    assert by["a_text-0"]["ocr_boxes"] == 3 and "ocr_area_ratio=" in by["a_text-0"]["filter_reason"]
    assert by["d_copy-0"]["dup_of"] == by["b_orig-0"]["clip_id"] and not by["d_copy-0"]["keep"]
    assert [by[c]["keep"] for c in ("a_text-1", "b_orig-0", "c_other-0")] == [True, True, True]


@needs_ocr
def test_curate_end_to_end_with_model_scorers(videos, clip_weights, tmp_path):
    model_dir, head = clip_weights
    out = tmp_path / "out"
    inputs = [str(videos / n) for n in ("a_text.mp4", "b_orig.mp4", "c_other.mp4", "d_copy.mp4")]
    res = CliRunner().invoke(app, ["curate", *inputs, "-o", str(out), "--recipe", str(_recipe(tmp_path, model_dir, head)),
                                   "-q", "--no-report"])
    assert res.exit_code == 0, res.output
    rows = read_manifest(out / "manifest.parquet")
    by = _by_name(rows)
    assert sorted(by) == ["a_text-0", "a_text-1", "b_orig-0", "c_other-0", "d_copy-0"]
    text, plain = by["a_text-0"], by["a_text-1"]
    assert text["ocr_boxes"] == 3 and text["ocr_area_ratio"] > 0.05 and not text["keep"]
    assert "ocr_area_ratio=" in text["filter_reason"]
    assert plain["ocr_boxes"] == 0 and plain["keep"]
    # the re-encoded copy (another video, other size and quality) is the duplicate of the original
    assert by["d_copy-0"]["dup_of"] == by["b_orig-0"]["clip_id"] and by["d_copy-0"]["is_duplicate"] == 1
    assert not by["d_copy-0"]["keep"] and "is_duplicate=1>0" in by["d_copy-0"]["filter_reason"]
    assert by["d_copy-0"]["bucket"] is None
    for cid in ("a_text-1", "b_orig-0", "c_other-0"):
        assert by[cid]["dup_of"] is None and by[cid]["is_duplicate"] == 0 and by[cid]["keep"]
    for r in rows:
        assert np.isfinite(r["aesthetic"]) and r["text_match"] is None and len(r["phash"]) == 16
        assert json.loads(r["provenance"])["aesthetic"]["params"]["model"] == str(model_dir)
        assert not [k for k in r if k.startswith("_")]  # samples and embeddings never reach the manifest

    # resume: a unit lost to a kill is redone, and the manifest is the same (global dedup included)
    units = sorted((out / ".soraprep" / "units").glob("*.parquet"))
    units[1].unlink()
    (out / "manifest.parquet").unlink()
    again = curate(inputs, out, recipe=str(tmp_path / "recipe.yaml"), report=False)
    assert again.rows == rows

    # rethreshold: no scorer runs again; dedup re-runs with the new distance before the filter
    loose = validate({**yaml.safe_load((tmp_path / "recipe.yaml").read_text()), "dedup": {"max_hamming": 32},
                      "filter": {"duration_s": {"min": 1.0}, "is_duplicate": {"max": 0}}})
    res2 = rethreshold(out, recipe=loose, report=False)
    hashes = [int(r["phash"], 16) for r in res2.rows]
    want = [next((res2.rows[j]["clip_id"] for j in range(i) if hamming(h, hashes[j]) <= 32), None)
            for i, h in enumerate(hashes)]
    assert [r["dup_of"] for r in res2.rows] == want
    assert sum(w is not None for w in want) > 1  # more than the re-encoded copy at 32 bits
    assert [r["keep"] for r in res2.rows] == [w is None for w in want]
    by2 = _by_name(res2.rows)
    assert by2["a_text-0"]["keep"] and by2["a_text-0"]["ocr_boxes"] == 3  # ocr rule gone, scores carried over
