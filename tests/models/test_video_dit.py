"""Spacetime video DiT: non-square shapes, full and factorized attention, caption cross-attention with a
pluggable (tiny, random, saved-and-reloaded) T5 or CLIP text encoder."""

import pytest

torch = pytest.importorskip("torch")

from soraprep.diffusion.transport import Transport  # noqa: E402
from soraprep.models import MODELS  # noqa: E402
from soraprep.models.layers import sincos_3d  # noqa: E402

TINY = dict(hidden_size=32, depth=2, num_heads=4, text_dim=24, text_len=10)


def _perturb(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


@pytest.mark.parametrize("attention", ["full", "factorized"])
@pytest.mark.parametrize("size,patch", [((3, 6, 10), (1, 2, 2)), ((4, 10, 4), (2, 2, 2)), ((1, 4, 14), (1, 2, 2))])
def test_non_square_shapes_and_zero_init(attention, size, patch):
    model = MODELS["VideoDiT-S/2"](**TINY, attention=attention, patch_size=patch).eval()
    x, t = torch.randn(2, 4, *size), torch.tensor([5, 900])
    y, mask = torch.randn(2, 7, 24), torch.ones(2, 7, dtype=torch.bool)
    out = model(x, t, y=y, mask=mask)
    assert out.shape == (2, 8, *size)
    assert torch.count_nonzero(out) == 0  # adaLN-Zero + zeroed cross-attention output
    assert _perturb(model)(x, t, y=y, mask=mask).abs().sum() > 0


def test_one_model_serves_different_buckets():
    model = _perturb(MODELS["STDiT-S/2"](**TINY)).eval()
    for size in ((2, 4, 8), (4, 8, 4), (1, 6, 6)):
        assert model(torch.randn(1, 4, *size), torch.tensor([3]), y=torch.randn(1, 5, 24)).shape == (1, 8, *size)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(1, 4, 2, 5, 8), torch.tensor([3]), y=torch.randn(1, 5, 24))


def _grad_support(attention, zero=None):
    """|d out[token (t=0, patch (0, 0))] / d x| summed to (T, H, W) for a one-block model."""
    model = _perturb(MODELS["VideoDiT-S/2"](**{**TINY, "depth": 1}, attention=attention, conditioning="none"))
    if zero is not None:  # switch one attention branch off to look at the other alone
        torch.nn.init.zeros_(getattr(model.blocks[0], zero).proj.weight)
        torch.nn.init.zeros_(getattr(model.blocks[0], zero).proj.bias)
    x = torch.randn(1, 4, 3, 4, 4, requires_grad=True)
    model.eval()(x, torch.tensor([10]))[0, :, 0, 0:2, 0:2].sum().backward()
    return x.grad.abs().sum(dim=(0, 1)) > 0  # (T, H, W) bool


def test_full_attention_is_global_and_factorized_attention_is_per_axis():
    assert bool(_grad_support("full")[2, 2:, 2:].all())  # other frame and other position, in one block
    spatial = _grad_support("factorized", zero="attn_temp")  # temporal branch off: only frame 0
    assert bool(spatial[0].all()) and not bool(spatial[1:].any())
    temporal = _grad_support("factorized", zero="attn")  # spatial branch off: only patch (0, 0), all frames
    assert bool(temporal[:, :2, :2].all())
    temporal[:, :2, :2] = False
    assert not bool(temporal.any())


def test_caption_mask_and_dropout():
    model = _perturb(MODELS["VideoDiT-S/2"](**TINY)).eval()
    x, t = torch.randn(2, 4, 2, 4, 6), torch.tensor([1, 2])
    y, mask = torch.randn(2, 6, 24), torch.tensor([[1, 1, 1, 0, 0, 0], [1] * 6], dtype=torch.bool)
    out = model(x, t, y=y, mask=mask)
    y2 = y.clone()
    y2[0, 3:] = 50.0  # padded tokens must not matter
    assert torch.allclose(out, model(x, t, y=y2, mask=mask), atol=1e-6)
    empty = model(x, t, y=y, mask=torch.zeros(2, 6, dtype=torch.bool))  # all padding: finite, not NaN
    assert torch.isfinite(empty).all()
    null_y, null_mask = model.null_condition(2, 6)
    dropped = model(x, t, y=y, mask=mask, force_drop_ids=torch.tensor([1, 1]))
    assert torch.allclose(dropped, model(x, t, y=null_y, mask=null_mask), atol=1e-6)
    cfg = model.forward_with_cfg(x, t, torch.cat([y[:1], null_y[:1]]), 3.0, mask=torch.cat([mask[:1], null_mask[:1]]))
    assert cfg.shape == (2, 8, 2, 4, 6) and torch.allclose(cfg[0, :4], cfg[1, :4])  # both halves guided


def test_class_conditioned_video_dit_trains_with_transport():
    model = MODELS["STDiT-S/2"](**TINY, conditioning="class", num_classes=3, learn_sigma=False,
                              caption_dropout_prob=0.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):  # adaLN-Zero: gradient reaches the condition path from the third step on
        opt.zero_grad()
        Transport().training_losses(model, torch.randn(2, 4, 2, 4, 4), dict(y=torch.tensor([0, 2])))["loss"].mean().backward()
        opt.step()
    assert model.y_embedder.embedding_table.weight.grad[[0, 2]].abs().sum() > 0
    assert model.y_embedder.embedding_table.weight.grad[1].abs().sum() == 0


def test_sincos_3d_positions_are_distinct_and_frame_shared_spatially():
    pos = sincos_3d(32, 3, 2, 5).reshape(3, 10, 32)
    assert torch.unique(pos.reshape(30, 32), dim=0).shape[0] == 30
    diff = pos[1] - pos[0]  # moving one frame adds the same temporal offset to every spatial position
    assert torch.allclose(diff, diff[:1].expand_as(diff), atol=1e-6)


def _tiny_tokenizer(path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "a red car drives along the coast road at sunset dog runs in park".split()
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(path)
    return len(vocab)


@pytest.mark.parametrize("kind", ["t5", "clip"])
def test_pluggable_text_encoder_end_to_end(tmp_path, kind):
    transformers = pytest.importorskip("transformers")
    from soraprep.models.text_encoder import TextEncoder

    vocab = _tiny_tokenizer(tmp_path)
    if kind == "t5":
        cfg = transformers.T5Config(vocab_size=vocab, d_model=24, d_kv=8, d_ff=48, num_layers=1, num_heads=3,
                                    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
        transformers.T5EncoderModel(cfg).save_pretrained(tmp_path)
    else:
        cfg = transformers.CLIPTextConfig(vocab_size=vocab, hidden_size=24, intermediate_size=48, num_hidden_layers=1,
                                          num_attention_heads=3, max_position_embeddings=16, pad_token_id=0,
                                          eos_token_id=1, bos_token_id=2)
        transformers.CLIPTextModel(cfg).save_pretrained(tmp_path)
    enc = TextEncoder.from_pretrained(tmp_path, max_length=10)
    assert enc.kind == kind and enc.dim == 24
    emb, mask = enc.encode(["a red car drives along the coast road", "dog runs"])
    assert emb.shape == (2, 10, 24) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [8, 2]  # one token per word (this tiny tokenizer adds no specials)
    model = _perturb(MODELS["STDiT-S/2"](**TINY)).eval()
    out = model(torch.randn(2, 4, 2, 4, 4), torch.tensor([10, 20]), y=emb, mask=mask)
    assert out.shape == (2, 8, 2, 4, 4) and torch.isfinite(out).all()
