"""Ground truth of the generated test videos (imported by tests/conftest.py and by tests that need it).

A uniquely named module rather than ``from conftest import ...``: several test folders have a conftest.
"""

from fractions import Fraction

from soraprep.video.synth import Shot

# name -> (shots, make_video kwargs). Cut frames are the running sums of the shot lengths.
MEDIA = {
    "cuts.mp4": ([Shot(40, speed=3), Shot(35, speed=-2), Shot(45, speed=4), Shot(30, speed=2)],
                 dict(width=320, height=240)),
    "ntsc.mp4": ([Shot(48, speed=3), Shot(52, speed=2)], dict(fps=Fraction(30000, 1001), width=352, height=240)),
    "odd_size.mp4": ([Shot(30, speed=3), Shot(30, speed=2)], dict(fps=Fraction(12), width=202, height=154)),
    "kinds.mp4": ([Shot(50, speed=3), Shot(40, "static"), Shot(30, "black"), Shot(40, "blur", speed=2),
                   Shot(40, "text", speed=2)], dict(width=320, height=240)),
    "bframes.mp4": ([Shot(60, speed=3), Shot(60, speed=2)], dict(width=320, height=240, gop=12, bframes=3)),
    "long_shot.mp4": ([Shot(260, speed=1.5)], dict(fps=Fraction(25), width=256, height=144, gop=25)),
    "audio.mp4": ([Shot(50, speed=3)], dict(width=320, height=240, audio=True)),
}


def cut_frames(name: str) -> list[int]:
    shots = MEDIA[name][0]
    out, n = [], 0
    for s in shots[:-1]:
        n += s.frames
        out.append(n)
    return out
