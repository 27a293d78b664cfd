"""Cost per clip of the model-based scorer stages on CPU (ocr, aesthetic, text_match, phash) and of the
frame sampling they ask of the one decode pass.

    python benchmarks/bench_scorers.py                       # 16 clips x 4 samples, CLIP ViT-B/32 and ViT-L/14
    python benchmarks/bench_scorers.py --clips 8 --arch B32  # quick look

Each clip row carries 4 sampled frames (JPEG at 224-px short side, what `analyze` keeps) from generated
1280x720 footage, half of it with subtitles. CLIP towers are randomly initialised with the exact
shapes of openai/clip-vit-base-patch32 / clip-vit-large-patch14 (compute does not depend on the weight
values) and loaded through the stages' real loading path. One process, ``torch_threads``/onnxruntime
threads = 1 (as in a curation worker). Also times `analyze` on a 60 s 720p video with and without
sampling (the only extra decode-pass cost of these stages). Prints a Markdown block for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2

ARCHS = {  # vision (hidden, layers, heads, patch), text (hidden, layers, heads), projection
    "B32": dict(vision=(768, 12, 12, 32), text=(512, 12, 8), proj=512),
    "L14": dict(vision=(1024, 24, 16, 14), text=(768, 12, 12), proj=768),
}


def sample_rows(n_clips: int, frames: int) -> list[dict]:
    from soraprep.video.synth import Shot, shot_frames

    rows = []
    for c in range(n_clips):
        kind = "text" if c % 2 else "moving"
        imgs = list(shot_frames(Shot(frames * 5, kind, seed=c), c, 1280, 720))[::5]
        samples = []
        for i, rgb in enumerate(imgs):
            small = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (398, 224), interpolation=cv2.INTER_AREA)
            samples.append((i * 25, cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes()))
        rows.append({"clip_id": f"c{c}", "text": f"a video of shot {c} with moving colours", "_samples": samples})
    return rows


def save_random_clip(root: Path, arch: str) -> tuple[Path, Path]:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizerFast
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from soraprep.curate.score.clip_scores import build_aesthetic_head

    a = ARCHS[arch]
    special = ["<|startoftext|>", "<|endoftext|>", "<unk>"]
    tk = Tokenizer(models.BPE(unk_token="<unk>", end_of_word_suffix="</w>"))
    tk.normalizer, tk.pre_tokenizer = normalizers.Lowercase(), pre_tokenizers.Whitespace()
    tk.train_from_iterator(["a video of shot with moving colours"] * 4,
                           trainers.BpeTrainer(vocab_size=100, special_tokens=special, end_of_word_suffix="</w>"))
    tk.post_processor = processors.TemplateProcessing(single="<|startoftext|> $A <|endoftext|>",
                                                      special_tokens=[(s, tk.token_to_id(s)) for s in special[:2]])
    tok = CLIPTokenizerFast(tokenizer_object=tk, bos_token=special[0], eos_token=special[1], unk_token="<unk>",
                            pad_token=special[1])
    (vh, vl, vn, patch), (th, tl, tn) = a["vision"], a["text"]
    cfg = CLIPConfig(text_config=dict(vocab_size=49408, hidden_size=th, intermediate_size=4 * th, num_hidden_layers=tl,
                                      num_attention_heads=tn, max_position_embeddings=77, bos_token_id=0,
                                      eos_token_id=1, pad_token_id=1),
                     vision_config=dict(hidden_size=vh, intermediate_size=4 * vh, num_hidden_layers=vl,
                                        num_attention_heads=vn, image_size=224, patch_size=patch),
                     projection_dim=a["proj"])
    d = root / f"clip-{arch}"
    CLIPModel(cfg).save_pretrained(d)
    CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=tok).save_pretrained(d)
    torch.save(build_aesthetic_head(a["proj"]).state_dict(), root / f"head-{arch}.pth")
    return d, root / f"head-{arch}.pth"


class Both:
    """Two stages in a row, as a recipe runs them (the second reuses the first's frame embeddings)."""

    def __init__(self, a, b):
        self.a, self.b, self.batch_size = a, b, a.batch_size

    def setup(self):
        self.a.setup(), self.b.setup()

    def __call__(self, rows):
        return self.b(self.a(rows))


def per_clip(stage, rows, repeats: int) -> tuple[float, float]:
    """(setup seconds, median seconds per clip over ``repeats`` passes in batches of stage.batch_size)."""
    t = time.perf_counter()
    stage.setup()
    setup = time.perf_counter() - t
    stage([dict(r) for r in rows[:2]])  # warm-up (first-call allocations, lazy inits)
    times = []
    for _ in range(repeats):
        batch = [dict(r) for r in rows]
        t = time.perf_counter()
        for i in range(0, len(batch), stage.batch_size):
            stage(batch[i:i + stage.batch_size])
        times.append((time.perf_counter() - t) / len(rows))
        assert not any(r.get("error") for r in batch), [r["error"] for r in batch if r.get("error")]
    return setup, statistics.median(times)


def analyze_cost(seconds: int) -> tuple[float, float]:
    from soraprep.curate import recipe  # noqa: F401  (registers the frame scorers)
    from soraprep.curate.analyze import AnalyzeStage, ProbeStage
    from soraprep.video.synth import Shot, make_video

    path = Path(tempfile.mkdtemp()) / "v.mp4"
    make_video(path, [Shot(25 * seconds // 4, speed=3, seed=i) for i in range(4)], width=1280, height=720)
    out = []
    for every in (0.0, 1.0):
        stage = AnalyzeStage(scorers={"motion": {}, "sharpness": {}, "brightness": {}, "static": {}},
                             sample_every_s=every)
        stage.setup()
        t = time.perf_counter()
        rows = stage(ProbeStage()([{"source": str(path), "video_id": "v"}]))
        out.append(time.perf_counter() - t)
        assert not rows[0].get("error")
    return out[0], out[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--frames", type=int, default=4, help="sampled frames per clip each stage looks at")
    ap.add_argument("--arch", default="B32,L14", help="CLIP sizes to time: B32, L14")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--analyze-seconds", type=int, default=60)
    args = ap.parse_args()

    import torch

    from soraprep.curate.score.clip_scores import AestheticStage, TextMatchStage
    from soraprep.curate.score.dedup import PhashStage
    from soraprep.curate.score.ocr import OcrStage

    torch.set_num_threads(1)
    rows = sample_rows(args.clips, args.frames)
    results = []
    for label, stage in [("phash (middle sample)", PhashStage()),
                         ("ocr, det_side 320", OcrStage(frames=args.frames)),
                         ("ocr, det_side 736 (rapidocr default)", OcrStage(frames=args.frames, det_side=736))]:
        results.append((label, *per_clip(stage, rows, args.repeats)))
    with tempfile.TemporaryDirectory() as tmp:
        for arch in [a for a in args.arch.split(",") if a]:
            model, head = save_random_clip(Path(tmp), arch)
            aes = AestheticStage(model=str(model), head=str(head), frames=args.frames)
            tm = TextMatchStage(model=str(model), frames=args.frames)
            for label, stage in [(f"aesthetic, CLIP {arch} + MLP", aes), (f"text_match, CLIP {arch}", tm),
                                 (f"aesthetic + text_match, CLIP {arch} (frames embedded once)", Both(aes, tm))]:
                results.append((label, *per_clip(stage, rows, args.repeats)))
    no_samples, with_samples = analyze_cost(args.analyze_seconds)

    print(f"\n{args.clips} clips x {args.frames} samples (224 px), 1 thread, CPU; median of {args.repeats} passes\n")
    print("| stage | setup (s) | per clip (ms) | per sampled frame (ms) |")
    print("|---|---|---|---|")
    for label, setup, pc in results:
        frames = 1 if label.startswith("phash") else args.frames
        print(f"| {label} | {setup:.2f} | {pc * 1e3:.1f} | {pc * 1e3 / frames:.1f} |")
    print(f"\nanalyze on {args.analyze_seconds} s 1280x720 25 fps: {no_samples:.2f} s without sampling, "
          f"{with_samples:.2f} s keeping a 224-px JPEG every 1 s (+{100 * (with_samples / no_samples - 1):.1f} %)")


if __name__ == "__main__":
    main()
