"""OCR v2 on generated textures with no text (issue 14: walls, fences, lattices dropped as "text").

Ground truth by construction: soraprep/video/textures.py draws no glyph, so the true text area is 0;
``overlay_text`` (cv2.putText) puts real text at known places. The texture frames below are ones the v1
rules (detection only, boxes under half the frame) covered with 15-99 % "text" — asserted here, so the
test fails if the textures ever stop fooling the detector — and v2 (boxes must read as text) must keep
~0 of them, while real overlay text of several sizes, on plain, dark and textured backgrounds, is found.
"""

import importlib.util

import cv2
import numpy as np
import pytest

from soraprep.curate.recipe import RecipeError, validate
from soraprep.curate.score.ocr import OcrStage, TextBox, text_area
from soraprep.video.synth import Shot, shot_frames
from soraprep.video.textures import TEXTURES, overlay_text

needs_ocr = pytest.mark.skipif(importlib.util.find_spec("rapidocr") is None,
                               reason="needs rapidocr (pip install 'soraprep[ocr]')")

#: (texture, frame height, element size px, seed): frames the v1 rules read as 15-99 % text
FOOLED_V1 = [("brick_wall", 90, 4, 0), ("brick_wall", 90, 5, 2), ("brick_wall", 224, 8, 1),
             ("brick_wall", 224, 12, 0), ("fence", 90, 6, 2), ("fence", 90, 8, 3), ("fence", 224, 12, 2),
             ("fence", 224, 16, 3), ("lattice", 90, 10, 0), ("lattice", 90, 10, 1)]


def _frame(rgb: np.ndarray) -> np.ndarray:
    """What the stage sees: analyze's JPEG sample, decoded to BGR."""
    return cv2.imdecode(cv2.imencode(".jpg", rgb[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])[1], cv2.IMREAD_COLOR)


def _texture(name: str, h: int, cell: int, seed: int) -> np.ndarray:
    return TEXTURES[name](h, round(h * 16 / 9), seed, cell)


@pytest.fixture(scope="module")
def v2():
    s = OcrStage()
    s.setup()
    return s


@pytest.fixture(scope="module")
def v1():  # the rules before issue 14: detection only, boxes over half the frame dropped
    s = OcrStage(recognize=False, min_aspect=0.0)
    s.setup()
    return s


# --- textures: no text, so ~0 area -------------------------------------------------------------------

def test_texture_generators_are_deterministic_rgb():
    for name, gen in TEXTURES.items():
        a, b = gen(90, 160, 3, 6), gen(90, 160, 3, 6)
        assert a.shape == (90, 160, 3) and a.dtype == np.uint8 and np.array_equal(a, b), name
        assert a.std() > 10, name  # real structure, not a flat frame
        assert not np.array_equal(a, gen(90, 160, 4, 6)), name  # the seed matters


@needs_ocr
@pytest.mark.parametrize("name,h,cell,seed", FOOLED_V1)
def test_textures_that_fooled_v1_read_as_no_text(v1, v2, name, h, cell, seed):
    img = _frame(_texture(name, h, cell, seed))
    before = text_area(v1.text_boxes(img), *img.shape[:2])
    assert before > 0.15, f"{name} no longer fools the detector ({before:.2f}): pick a harder cell/seed"
    assert text_area(v2.text_boxes(img), *img.shape[:2]) <= 0.005


@needs_ocr
def test_other_textures_read_as_no_text(v2):
    for name in ("checkerboard", "foliage", "brick_wall", "fence", "lattice"):
        for h, cell in ((90, 4), (224, 6), (224, None)):
            img = _frame(_texture(name, h, cell, 1))
            assert text_area(v2.text_boxes(img), *img.shape[:2]) <= 0.005, (name, h, cell)


# --- real overlay text is still found ----------------------------------------------------------------

def _backgrounds(h: int, w: int) -> dict[str, np.ndarray]:
    return {"plain": next(iter(shot_frames(Shot(1, "moving", seed=5), 0, w, h))),
            "dark": np.full((h, w, 3), 16, np.uint8),
            "fence": TEXTURES["fence"](h, w, 3, 6)}


@needs_ocr
@pytest.mark.parametrize("h,scales", [(90, (0.35, 0.5, 0.8)), (224, (0.5, 0.8, 1.2, 1.6))])
def test_overlay_text_of_several_sizes_is_found(v1, v2, h, scales):
    w = round(h * 16 / 9)
    cases = misses = 0
    for bg, img in _backgrounds(h, w).items():
        if bg == "fence" and h < 100:
            continue  # 90p text over a fence at these sizes is unreadable by eye too
        for scale in scales:
            for text in ("HELLO WORLD", "Sale 50% off", "OK"):
                frame = _frame(overlay_text(img, text, scale=scale))
                boxes, cases = v2.text_boxes(frame), cases + 1
                if boxes is None and v1.text_boxes(frame) is None:
                    misses += 1  # the detector itself saw nothing (measured: "OK" at 0.8 over the fence)
                    continue
                assert boxes is not None and len(boxes) == 1, (bg, scale, text)  # the rules never lose it
                (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, round(2 * scale)))
                area = text_area(boxes, h, w)
                assert 0.5 * tw * th / (h * w) < area < 6 * tw * th / (h * w), (bg, scale, text, area)
    assert misses <= 1, f"the detector missed {misses} of {cases} overlay texts"


@needs_ocr
@pytest.mark.parametrize("name,cell,seed,scale,org", [("fence", 16, 3, 1.2, (20, 60))])
def test_text_over_a_texture_counts_only_the_text(v1, v2, name, cell, seed, scale, org):
    # Limitation (measured): text drawn right over such a pattern often merges with it into one box that
    # reads badly ("HHHHELLOiWORLDHHH", score 0.79) and is then dropped, or is kept with some wall in it.
    frame = _frame(overlay_text(_texture(name, 224, cell, seed), "HELLO WORLD", scale=scale, org=org))
    boxes = v2.text_boxes(frame)
    assert boxes is not None and len(boxes) == 1
    (tw, th), _ = cv2.getTextSize("HELLO WORLD", cv2.FONT_HERSHEY_SIMPLEX, scale, round(2 * scale))
    area = text_area(boxes, 224, 398)
    assert tw * th / (224 * 398) < area < 4 * tw * th / (224 * 398)  # the text line, not the wall
    assert text_area(v1.text_boxes(frame), 224, 398) > max(0.2, 1.5 * area)  # v1: the wall too
    read = [b for b in v2.detect(frame) if v2.reject(b, 224, 398) is None]
    assert "HELLO" in read[0].chars.upper()


@needs_ocr
def test_stage_columns_on_texture_and_text_rows(v2):
    def row(frames):
        return {"_samples": [(i, cv2.imencode(".jpg", f[:, :, ::-1])[1].tobytes()) for i, f in enumerate(frames)]}

    texture = [_texture(n, h, c, s) for n, h, c, s in FOOLED_V1[:2]]
    with_text = [overlay_text(t, "Breaking News", scale=0.5) for t in (np.full((90, 160, 3), 30, np.uint8),) * 2]
    a, b = v2([row(texture), row(with_text)])
    assert a["ocr_area_ratio"] == 0.0 and a["ocr_boxes"] == 0
    assert b["ocr_boxes"] == 1 and 0.02 < b["ocr_area_ratio"] < 0.5


# --- the rules, one by one, on hand-made boxes (no model) ----------------------------------------------

def _box(x0, y0, x1, y1, text="", score=None):
    return TextBox(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32), text, score)


@needs_ocr
def test_each_rule_rejects_what_it_should():
    s = OcrStage()
    h, w = 224, 398
    line = (20, 100, 220, 130)  # 200 x 30 px: aspect 6.7
    assert s.reject(_box(*line, "Breaking News", 0.99), h, w) is None
    assert s.reject(_box(0, 0, 398, 200, "Breaking News", 0.99), h, w) == "box_area"
    assert s.reject(_box(20, 20, 40, 200, "Breaking News", 0.99), h, w) == "aspect"  # a picket
    assert s.reject(_box(*line, "Breaking News", 0.6), h, w) == "text_score"
    assert s.reject(_box(*line, "X", 0.99), h, w) == "chars"
    assert s.reject(_box(*line, "-.-", 0.99), h, w) == "chars"  # punctuation is not a character
    assert s.reject(_box(*line, "TTT", 0.99), h, w) == "char_density"  # 3 letters along 6.7 heights
    assert s.reject(_box(*line, "11111111", 0.99), h, w) == "char_repeat"
    assert s.reject(_box(*line, "1000000", 0.99), h, w) is None  # 6 of 7: a number, not a pattern
    assert s.reject(_box(20, 100, 56, 130, "OK", 0.99), h, w) is None  # short words pass
    assert s.reject(_box(20, 100, 80, 130, "新闻", 0.99), h, w) is None  # any script counts
    # every rule is a parameter: turned off, the same boxes pass
    off = OcrStage(min_text_score=0.0, min_chars=0, min_char_density=0.0, max_char_repeat=1.0, min_aspect=0.0)
    for box in (_box(*line, "TTT", 0.3), _box(*line, "11111111", 0.99), _box(20, 20, 40, 200, "", 0.1)):
        assert off.reject(box, h, w) is None
    # without recognition only the geometric rules apply (v1 + aspect)
    geo = OcrStage(recognize=False)
    assert geo.reject(_box(*line), h, w) is None and geo.reject(_box(20, 20, 40, 200), h, w) == "aspect"


@needs_ocr
def test_rule_settings_fail_loud_with_a_fix():
    for spec, msg in [({"min_text_score": 1.0}, "ocr.min_text_score is a recogniser confidence in [0, 1)"),
                      ({"min_chars": -1}, "ocr.min_chars is a number of letters/digits"),
                      ({"min_char_density": 9.0}, "ocr.min_char_density is letters/digits per unit"),
                      ({"max_char_repeat": 0.0}, "ocr.max_char_repeat is a share in (0, 1]"),
                      ({"min_aspect": -1.0}, "ocr.min_aspect is a length/height ratio"),
                      ({"recognise": False}, "did you mean 'recognize'")]:
        with pytest.raises(RecipeError) as err:
            validate({"ocr": spec})
        assert msg in str(err.value)
