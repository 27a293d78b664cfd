"""The local transformers backend, through the real loading (AutoProcessor / AutoModelForImageTextToText)
and generation path, on a tiny random-weight LLaVA. Random weights write gibberish: assert structure."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from soraprep.caption import Captioning, CaptionSettings, caption_manifest
from soraprep.caption.backends import BackendConfigError, VLMRequest, make_captioner
from soraprep.manifest import read_manifest

pytest.importorskip("torch")


def _frames(n: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return tuple(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(n))


def test_loads_with_auto_classes_and_generates_a_batch(tiny_llava):
    cap = make_captioner("transformers", model=str(tiny_llava), batch_size=3, max_wait_s=5.0, device="cpu",
                         dtype="float32")
    calls = []
    real_generate = cap._model.generate
    cap._model.generate = lambda **kw: calls.append(kw["input_ids"].shape[0]) or real_generate(**kw)
    try:
        assert type(cap._model).__name__ == "LlavaForConditionalGeneration"
        assert cap.takes_images and cap.device == "cpu"
        reqs = [VLMRequest("describe the frames", _frames(2), max_new_tokens=5),
                VLMRequest("describe", _frames(1, seed=1), max_new_tokens=5),
                VLMRequest("merge these descriptions", (), max_new_tokens=4)]     # text-only: summary step
        replies = cap.generate(reqs)
        assert [r.ok for r in replies] == [True, True, True]
        assert calls == [2, 1]      # one batch: the two image requests together, the text-only one apart
        assert all(isinstance(r.text, str) for r in replies)
        assert all(1 <= r.tokens_out <= 5 for r in replies[:2]) and 1 <= replies[2].tokens_out <= 4
        # prompt tokens include 4 image tokens per image (2x2 patches, CLS dropped)
        text_only = cap._processor.tokenizer([cap.prompt_text(reqs[0])])["input_ids"]
        assert replies[0].tokens_in == len(text_only[0]) + 2 * (4 - 1)
        # greedy decoding is deterministic, batched or alone
        cap.max_wait_s = 0.0
        again = cap.generate([reqs[1]])[0]
        assert again.text == replies[1].text
    finally:
        cap.close()


def test_chat_template_puts_one_image_token_per_frame(tiny_llava):
    cap = make_captioner("transformers", model=str(tiny_llava), batch_size=1, device="cpu")
    try:
        text = cap.prompt_text(VLMRequest("what happens?", _frames(3), system="be precise"))
        assert text.count("<image>") == 3 and text.startswith("SYSTEM: be precise") and text.endswith("ASSISTANT:")
    finally:
        cap.close()


def test_manifest_captioning_both_modes(manifest, tiny_llava, tmp_path):
    out = tmp_path / "out.parquet"
    base = dict(backend="transformers", model=str(tiny_llava), frames=3, concurrency=4, min_units=0,
                max_new_tokens=6, backend_options={"device": "cpu", "max_wait_s": 0.2})
    s = caption_manifest(manifest, out=out, settings=CaptionSettings(**base, mode="video"))
    rows = {r["clip_id"]: r for r in read_manifest(out)}
    assert s.eligible == 4 and s.captioned + s.failed == 4 and s.requests == 4
    for cid in ("v0-0000", "v1-0000", "v2-0000", "v3-0000"):
        r = rows[cid]
        assert r["caption_backend"] == "transformers" and r["caption_model"] == str(tiny_llava)
        assert r["caption_frames"] == 3 and r["caption_tokens_in"] > 3 * 4 and r["caption_tokens_out"] >= 1
        # random weights: a caption may come out empty/too short -> then it is a caption_error, never `text`
        if r["caption_error"] is None:
            assert r["text"] == r["caption"] and r["caption"]
        else:
            assert r["caption_error"]["stage"] == "caption" and r["text"] is None
    assert rows["dropped"]["caption_model"] is None and rows["broken"]["caption_model"] is None

    # frames+summary: 3 frame requests + 1 summary request per clip, batched across clips
    s2 = caption_manifest(manifest, out=out, settings=CaptionSettings(**base, mode="frames+summary"))
    assert s2.requests == 4 * (3 + 1) and s2.cached == 0
    # rerun: everything from the cache, no generation at all
    s3 = caption_manifest(manifest, out=out, settings=CaptionSettings(**base, mode="frames+summary"))
    assert s3.requests == 0 and s3.cached + s3.failed == 4


def test_profile_backend_mismatch_and_bad_path_fail_loud(tiny_llava, tmp_path):
    with pytest.raises(BackendConfigError, match="openai"):
        Captioning(CaptionSettings(backend="transformers", model="THUDM/cogvlm2-llama3-chat-19B"))
    with pytest.raises(BackendConfigError, match="cannot load a processor"):
        make_captioner("transformers", model=str(tmp_path / "missing"), device="cpu")


def test_stage_is_registered_picklable_and_captions_a_batch(tiny_llava, manifest):
    from soraprep.caption.stage import CaptionStage
    from soraprep.manifest import read_manifest
    from soraprep.stages import STAGES, Stage

    assert STAGES["caption"] is CaptionStage
    stage = CaptionStage(backend="transformers", model=str(tiny_llava), frames=2, min_units=0, max_new_tokens=4,
                         out_dir=str(manifest.parent), backend_options={"device": "cpu"})
    assert isinstance(stage, Stage) and stage.settings.cache_path.endswith(".soraprep-cache/captions.sqlite")
    clone = pickle.loads(pickle.dumps(stage))
    assert clone.settings == stage.settings and clone.batch_size == 64
    rows = clone(read_manifest(manifest))
    clone.close()
    assert [r.get("caption_frames") for r in rows] == [2, 2, 2, 2, None, None]
    assert clone.summary.requests == 4 * (2 + 1) and clone.summary.eligible == 4     # llava profile: frames+summary
    with pytest.raises(ValueError, match="unknown mode"):
        CaptionStage(backend="openai", model="m", mode="dense")
    with pytest.raises(ValueError, match="model is required"):
        CaptionStage(backend="openai")


def test_summary_by_a_local_text_llm_after_server_frame_descriptions(manifest, tmp_path, tiny_text_llm):
    """frames+summary across backends: frames described over HTTP, merged by a local causal LM."""
    from soraprep.caption.fake_server import FakeChatServer

    llm = tiny_text_llm
    cap = make_captioner("transformers", model=str(llm), device="cpu")
    assert not cap.takes_images and type(cap._model).__name__ == "LlamaForCausalLM"
    assert cap.generate([VLMRequest("x", _frames(1))])[0].error_kind == "no_vision"
    cap.close()
    with FakeChatServer() as srv:
        s = caption_manifest(manifest, out=tmp_path / "o.parquet", settings=CaptionSettings(
            backend="openai", model="fake-vlm", base_url=srv.url, frames=2, mode="frames+summary", min_units=0,
            max_new_tokens=5, summary_backend="transformers", summary_model=str(llm),
            backend_options={"max_attempts": 3}, summary_backend_options={"device": "cpu", "dtype": "float32"}))
        assert srv.requests == 4 * 2                       # only the frame descriptions went over HTTP
    assert s.requests == 4 * 3 and s.eligible == 4
    rows = [r for r in read_manifest(tmp_path / "o.parquet") if r.get("caption_frames")]
    assert len(rows) == 4 and all(r["caption_model"] == f"fake-vlm + {llm}" for r in rows)
    assert all(r["caption_backend"] == "openai" for r in rows)
