"""Write clip files for spans of a source video, in four modes.

=========  ==========================================================================================
mode       what is written
=========  ==========================================================================================
none       nothing: the manifest's span points into the source, for a loader that seeks.
copy       stream copy (no re-encode). The start snaps *inwards* to the next keyframe; the end is the
           last frame before ``end_frame`` at which the packets written so far decode to a gap-free run
           of frames (exactly ``end_frame`` without B-frames, at most a few frames earlier with them).
keyframe   stream copy of whole GOPs: both ends snap inwards to keyframes.
exact      decode + re-encode frames ``[start_frame, end_frame)`` with libx264: frame-exact, slowest.
=========  ==========================================================================================

Snapping is always inwards, so a clip never holds frames from across a detected cut, and the returned
:class:`CutResult` says which frames the file really holds: ``num_frames`` equals what a decoder returns
from the file (no hidden pre-roll, no frame shared by adjacent clips). Files are written under a hidden
temporary name and renamed into place, so a half-written clip is never visible.

AVI stores no presentation times. DivX/Xvid "packed B-frames" are unpacked (``mpeg4_unpack_bframes``) and
given true timestamps from their picture types before copying; other AVIs with B-frames (e.g. H.264)
refuse stream copy (``cut_failed``), which the cut stage turns into an exact re-encode.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from soraprep.storage.files import atomic_write, publish, temp_path
from soraprep.video.io import (
    _VOP,
    PacketIndex,
    VideoError,
    decode,
    entry_point,
    open_container,
    scan_packets,
)
from soraprep.video.orient import display_rotation, display_size, upright_frame

CUT_MODES = ("none", "copy", "keyframe", "exact")

#: x264 threading for --cut exact, pinned so a clip's bytes do not depend on the machine
X264_THREADS = "threads=4:sliced-threads=0:lookahead-threads=1"

# Codecs the MP4 muxer takes as-is; anything else is stream-copied into Matroska.
_MP4_CODECS = {"h264", "hevc", "mpeg4", "mpeg2video", "mpeg1video", "av1", "vp9", "mjpeg"}


@dataclass(frozen=True)
class CutResult:
    path: str
    start_frame: int       # span of the source that the file holds, [start_frame, end_frame)
    end_frame: int
    num_frames: int
    mode: str
    width: int | None = None   # display size (after the display rotation), as a player shows the file
    height: int | None = None
    start_s: float | None = None   # the span in seconds (video.span: from the timestamps), set by CutPolicy
    end_s: float | None = None
    resumed: bool = False          # CutPolicy found the clip already cut (its resume marker), wrote nothing


def _tmp_path(dst: Path) -> Path:
    return temp_path(dst)  # the one soraprep temp-file namespace (storage/files.py)


def _publish(tmp: Path, dst: Path) -> None:
    publish(tmp, dst)


def cut_clip(src: str | os.PathLike, dst: str | os.PathLike, *, start_frame: int, end_frame: int,
             mode: str = "exact", index: PacketIndex | None = None, crf: int = 18,
             preset: str = "veryfast") -> CutResult:
    """Write frames ``[start_frame, end_frame)`` of ``src`` (display-order indices) to ``dst``.

    ``dst``'s suffix may change from ``.mp4`` to ``.mkv`` when a stream-copied codec does not fit MP4;
    the returned ``CutResult.path`` is the file actually written. Raises :class:`VideoError` when the span
    is empty after snapping (``kind="empty_after_snap"``) or the file cannot be written.
    """
    if mode not in CUT_MODES:
        raise ValueError(f"unknown cut mode {mode!r}; choose one of {', '.join(CUT_MODES)}")
    if end_frame <= start_frame:
        raise VideoError("empty_span", f"empty span {start_frame}..{end_frame}")
    src = str(src)
    if mode == "none":
        return CutResult(src, start_frame, end_frame, end_frame - start_frame, mode)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    index = index if index is not None else scan_packets(src)
    end_frame = min(end_frame, len(index))
    # a rotated source (phone video): `exact` turns the pixels upright (no display matrix in the output,
    # like ffmpeg's autorotate); stream copies keep the source's display matrix. Both show the same.
    rotation = display_rotation(src)
    if mode == "exact":
        return _reencode(src, dst, start_frame, end_frame, index, crf=crf, preset=preset, rotation=rotation)
    res = _stream_copy(src, dst, start_frame, end_frame, index, whole_gops=(mode == "keyframe"))
    if rotation and res.width and res.height:
        width, height = display_size(res.width, res.height, rotation)
        res = dataclasses.replace(res, width=width, height=height)
    return res


def _stream_copy(src: str, dst: Path, start: int, end: int, index: PacketIndex, whole_gops: bool) -> CutResult:
    if index.pts_guessed and (not index.packed_b or index.entries is None):
        raise VideoError("cut_failed", "this AVI has B-frames but no presentation timestamps: a stream copy would "
                         "hold the wrong frames with scrambled timestamps (use --cut exact)")
    keys = np.flatnonzero(index.keyframe)
    later = keys[keys >= start]
    if not len(later) or later[0] >= end:
        raise VideoError("empty_after_snap", f"no keyframe inside frames {start}..{end}: nothing to stream-copy "
                         "(use --cut exact, or a longer span)")
    first = int(later[0])
    for seek in (True, False):  # without seeking when the seek overshoots (imprecise in e.g. MPEG-PS)
        try:
            return _copy_packets(src, dst, first, end, index, whole_gops, seek)
        except _Overshot:
            continue
    raise AssertionError("unreachable")


class _Overshot(Exception):
    pass


_FALLBACK_FORMATS = ("matroska", "avi", "nut")


def _copy_packets(src: str, dst: Path, first: int, end: int, index: PacketIndex, whole_gops: bool,
                  seek: bool) -> CutResult:
    container = open_container(src)
    try:
        stream = container.streams.video[0]
        codec = stream.codec_context.name
        if dst.suffix.lower() in (".mp4", ".mov") and codec not in _MP4_CODECS:
            dst = dst.with_suffix(".mkv")
        if index.packed_b:   # DivX/Xvid packed B-frames: split them and stamp true timestamps first
            pairs, seek = _unpacked_packets(container, stream, index, first, seek), False
        else:
            pairs = _indexed_packets(container, stream, index)
        if seek and first > 0:
            container.seek(int(index.pts[first]), stream=stream, backward=True, any_frame=False)
        packets: list = []
        started = False
        best, best_hi = 0, first  # longest clean prefix of `packets`: it decodes to exactly [first, best_hi)
        seen: set[int] = set()
        hi = first                # exclusive end of the gap-free run [first, hi) within `seen`
        for packet, i in pairs:
            if not started:
                if i > first and seek:
                    raise _Overshot()
                if i != first:
                    continue  # the seek landed before our keyframe
                started = True
            if i < first:
                continue  # open-GOP leading picture that belongs before the keyframe: drop it
            clean = hi == first + len(seen)
            if whole_gops and packet.is_keyframe and i > first:
                if clean and hi <= end:   # boundaries only right before a keyframe
                    best, best_hi = len(packets), hi
                if i >= end:
                    break
            if not whole_gops and i >= end + 16:
                break  # far enough past `end` that no earlier B-frame can still be waiting for a reference
            packets.append(packet)
            seen.add(i)
            while hi in seen:
                hi += 1
            if not whole_gops and hi == first + len(seen) and hi <= end:
                best, best_hi = len(packets), hi
        else:
            if whole_gops and seen and hi == first + len(seen) and hi <= end:
                best, best_hi = len(packets), hi  # end of stream closes the last GOP
        if best == 0:
            raise VideoError("empty_after_snap", f"frames {first}..{end} hold no cleanly decodable run for stream copy")
        formats = ("mp4",) if dst.suffix.lower() in (".mp4", ".mov") else _FALLBACK_FORMATS
        for fmt in formats:
            ext = {"mp4": dst.suffix, "matroska": ".mkv", "avi": ".avi", "nut": ".nut"}[fmt]
            dst = dst.with_suffix(ext)
            tmp = _tmp_path(dst)
            try:
                _mux(tmp, fmt, stream, packets[:best], int(index.pts[first]))
                break
            except (av.error.FFmpegError, ValueError) as exc:
                tmp.unlink(missing_ok=True)
                if fmt == formats[-1]:
                    raise VideoError("cut_failed", f"no container takes codec {codec!r} for stream copy: {exc}; "
                                     "use --cut exact") from exc
    except av.error.FFmpegError as exc:
        raise VideoError("cut_failed", str(exc)) from exc
    finally:
        container.close()
    _publish(tmp, dst)
    return CutResult(str(dst), first, best_hi, best_hi - first, "keyframe" if whole_gops else "copy",
                     stream.width, stream.height)


def _indexed_packets(container, stream, index: PacketIndex):
    """``(packet, display index)`` in decode order; packets the index does not list are skipped."""
    for packet in container.demux(stream):
        pts = packet.pts if packet.pts is not None else packet.dts
        if packet.size == 0 or pts is None:
            continue
        i = int(np.searchsorted(index.pts, pts))
        if i < len(index) and index.pts[i] == pts:
            yield packet, i


_VOP_TYPES = "IPBS"   # vop_coding_type, the two bits after an MPEG-4 part 2 VOP start code


def _unpacked_packets(container, stream, index: PacketIndex, first: int, seek: bool):
    """``(packet, display index)`` for an MPEG-4 part 2 stream with packed B-frames, from the entry point
    at or before ``first`` (a closed-GOP I-VOP, see :func:`entry_point`) when ``seek``, else from the start.

    A DivX/Xvid AVI chunk may hold a P-VOP plus the B-VOP shown before it, followed later by a dummy
    "N-VOP" chunk; the demuxer's pts are guesses. ``mpeg4_unpack_bframes`` (what FFmpeg recommends) turns
    this into one VOP per packet in true decode order; a B-VOP is shown at once and a reference (I/P/S)
    VOP after the B-VOPs that follow it. Each packet gets the display index that implies, ``pts`` of that
    frame and a dts one frame before its decode position, so the written clip has true, monotonic
    timestamps that any reader understands.
    """
    from av.bitstream import BitStreamFilterContext

    bsf = BitStreamFilterContext("mpeg4_unpack_bframes", stream)
    step = int(np.median(np.diff(index.pts))) if len(index) > 1 else 1
    n = len(index)
    entry = entry_point(index, first) if seek else None
    demuxed = container.demux(stream)
    if entry is not None:
        container.seek(entry[1], stream=stream, backward=True, any_frame=False)
        demuxed = container.demux(stream)
        head = next((p for p in demuxed if p.size), None)
        if head is None or head.dts != entry[1]:
            raise _Overshot()   # did not land on the entry's chunk: the caller copies from the start
        demuxed = itertools.chain([head], demuxed)
    shown = entry[0] if entry else 0   # display slots given so far
    group: list = []   # a reference VOP and the B-VOPs after it, as (packet, decode position)

    def flush():
        nonlocal shown
        for j, (packet, k) in enumerate(group):
            i = shown + (len(group) - 1 if j == 0 else j - 1)   # the reference is shown after its B-VOPs
            if i < n and k < n:
                packet.pts, packet.dts = int(index.pts[i]), int(index.pts[k]) - step
                yield packet, i
        shown += len(group)
        group.clear()

    def unpacked():
        for packet in demuxed:
            if packet.size:
                yield from bsf.filter(packet)
        yield from bsf.filter(None)

    for k, packet in enumerate(unpacked(), start=shown):   # closed GOP: decode position == display index
        data = bytes(packet)
        at = data.find(_VOP)
        kind = _VOP_TYPES[data[at + 4] >> 6] if 0 <= at < len(data) - 4 else "P"
        if kind != "B":
            yield from flush()
            packet.is_keyframe = kind == "I"
        elif not group:   # a B-VOP with no reference before it (a damaged start): shown at once
            group.append((packet, k))
            yield from flush()
            continue
        group.append((packet, k))
    yield from flush()


def _mux(tmp: Path, fmt: str, stream, packets: list, offset_pts: int) -> None:
    out = av.open(str(tmp), mode="w", format=fmt)
    try:
        ostream = out.add_stream_from_template(stream)
        shift = None
        for packet in packets:
            if shift is None:  # rebase so the first frame is at 0 and no dts is negative
                shift = min(offset_pts, packet.dts if packet.dts is not None else offset_pts)
            if packet.pts is not None:
                packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = ostream
            out.mux(packet)
    finally:
        out.close()


def _reencode(src: str, dst: Path, start: int, end: int, index: PacketIndex, *, crf: int, preset: str,
              rotation: int = 0) -> CutResult:
    if dst.suffix.lower() not in (".mp4", ".mov", ".mkv"):
        dst = dst.with_suffix(".mp4")
    tmp = _tmp_path(dst)
    # bitexact: no muxer version string or creation time, so identical runs write identical bytes
    out = av.open(str(tmp), mode="w", format="mp4" if dst.suffix.lower() != ".mkv" else "matroska",
                  options={"fflags": "+bitexact"})
    n = 0
    ostream = None
    try:
        first_pts = None
        for f in decode(src, start_frame=start, end_frame=end, fmt=None, index=index):
            frame = f.array
            if ostream is None:
                w, h = frame.width - frame.width % 2, frame.height - frame.height % 2
                if w < 2 or h < 2:
                    raise VideoError("too_small", f"{frame.width}x{frame.height} is too small to encode")
                tb = index.time_base
                ostream = out.add_stream("libx264", rate=_rate(index))
                ostream.width, ostream.height = display_size(w, h, rotation)
                ostream.pix_fmt = "yuv420p"
                ostream.time_base = tb
                ostream.codec_context.time_base = tb
                # a fixed thread layout: x264's output depends on its thread count, which is otherwise the
                # machine's core count (frame threads, not slices; x264 is repeatable for a fixed count)
                ostream.options = {"preset": preset, "crf": str(crf), "x264-params": X264_THREADS}
                first_pts = frame.pts
            pts = frame.pts - first_pts
            if (frame.width, frame.height, frame.format.name) != (w, h, "yuv420p"):
                frame = frame.reformat(width=w, height=h, format="yuv420p")
            frame = upright_frame(frame, rotation)
            frame.pts = pts
            frame.time_base = index.time_base
            frame.pict_type = av.video.frame.PictureType.NONE
            for packet in ostream.encode(frame):
                out.mux(packet)
            n += 1
        if ostream is not None:
            for packet in ostream.encode():
                out.mux(packet)
    except av.error.FFmpegError as exc:
        out.close()
        tmp.unlink(missing_ok=True)
        raise VideoError("encode_failed", str(exc)) from exc
    except BaseException:
        out.close()
        tmp.unlink(missing_ok=True)
        raise
    out.close()
    if n == 0:
        tmp.unlink(missing_ok=True)
        raise VideoError("empty_span", f"no frame decoded in {start}..{end}")
    _publish(tmp, dst)
    return CutResult(str(dst), start, start + n, n, "exact", ostream.width, ostream.height)


def _rate(index: PacketIndex) -> Fraction:
    if len(index) > 1:
        step = Fraction(int(np.median(np.diff(index.pts)))) * index.time_base
        if step > 0:
            return (1 / step).limit_denominator(1001)
    return Fraction(25)


# ---- the cut policy: one for curate's cut stage and for download ---------------------------------------

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
_CLIP_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".nut")   # what a cut may write (stream copy may change it)


@dataclass(frozen=True)
class CutPolicy:
    """How a span becomes a clip file: the mode, the copy -> exact fallback, and resume markers.

    With ``copy``/``keyframe``, a clip whose inward snap to keyframes would lose more than ``max_snap_s``
    at either end (measured on the frame timestamps), or that cannot be stream-copied at all
    (``empty_after_snap``, ``cut_failed``), is re-encoded exactly instead when ``fallback_exact`` is on,
    with ``fallback_preset``. ``exact`` re-encodes with ``preset``; ``none`` writes nothing.

    :meth:`cut` optionally keeps a resume marker (a small JSON record, written atomically after the clip):
    a rerun that asks for the same frames of the same source finds it and the clip file, and cuts nothing.
    """

    mode: str = "copy"
    max_snap_s: float = 1.0
    fallback_exact: bool = True
    crf: int = 18
    preset: str = "veryfast"            # x264 preset of `mode: exact`
    fallback_preset: str = "ultrafast"  # x264 preset when a copy/keyframe clip falls back to re-encoding:
                                        # 1.6x faster than veryfast at the same crf, larger files (a minority of clips)

    def __post_init__(self) -> None:
        if self.mode not in CUT_MODES:
            raise ValueError(f"cut.mode must be one of {', '.join(CUT_MODES)}, got {self.mode!r}")
        if self.max_snap_s < 0:
            raise ValueError("cut.max_snap_s must be >= 0")
        if isinstance(self.crf, bool) or not isinstance(self.crf, int) or not 0 <= self.crf <= 51:
            raise ValueError(f"cut.crf must be an integer 0-51 (x264; 18 is visually lossless), got {self.crf!r}")
        for key in ("preset", "fallback_preset"):
            if getattr(self, key) not in X264_PRESETS:
                raise ValueError(f"cut.{key} must be an x264 preset: {', '.join(X264_PRESETS)}; "
                                 f"got {getattr(self, key)!r}")

    def cut(self, src: str | os.PathLike, dst: str | os.PathLike, *, start_frame: int, end_frame: int,
            index: PacketIndex | None = None, marker: str | os.PathLike | None = None) -> CutResult:
        """Cut frames ``[start_frame, end_frame)`` of ``src`` to ``dst`` (see :func:`cut_clip`) under this
        policy. ``marker``: the resume record's path (None: no marker). Raises :class:`VideoError`."""
        from soraprep.video.span import span_seconds

        if self.mode == "none":
            res = cut_clip(src, dst, start_frame=start_frame, end_frame=end_frame, mode="none")
            return dataclasses.replace(res, **_seconds(res, index))
        dst = Path(dst)
        wanted = [int(start_frame), int(end_frame), Path(src).name]
        if marker is not None:
            done = _resumed(Path(marker), dst, wanted, self.mode)
            if done is not None:
                return done
        index = index if index is not None else scan_packets(str(src))
        res, preset = None, self.preset
        if self.mode in ("copy", "keyframe"):
            preset = self.fallback_preset
            try:
                res = cut_clip(src, dst, start_frame=start_frame, end_frame=end_frame, mode=self.mode, index=index)
                a_s, b_s = span_seconds(start_frame, min(end_frame, len(index)), index=index)
                got_a, got_b = span_seconds(res.start_frame, res.end_frame, index=index)
                if self.fallback_exact and max(got_a - a_s, b_s - got_b) > self.max_snap_s + 1e-9:
                    res = None
            except VideoError as exc:
                if not self.fallback_exact or exc.kind not in ("empty_after_snap", "cut_failed"):
                    raise
        if res is None:
            res = cut_clip(src, dst, start_frame=start_frame, end_frame=end_frame, mode="exact", index=index,
                           crf=self.crf, preset=preset)
        for ext in _CLIP_SUFFIXES:   # a fallback may have changed the extension: no stale twin stays
            stale = dst.with_suffix(ext)
            if stale.name != Path(res.path).name:
                stale.unlink(missing_ok=True)
        res = dataclasses.replace(res, **_seconds(res, index))
        if marker is not None:
            _write_marker(Path(marker), res, wanted)
        return res


def _seconds(res: CutResult, index: PacketIndex | None) -> dict:
    if index is None:
        return {}
    from soraprep.video.span import span_seconds

    start_s, end_s = span_seconds(res.start_frame, res.end_frame, index=index)
    return {"start_s": start_s, "end_s": end_s}


def _resumed(marker: Path, dst: Path, wanted: list, mode: str) -> CutResult | None:
    """The clip a previous run recorded in ``marker`` for the same request, when its file is still there."""
    import json

    try:
        rec = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(rec, dict) or rec.get("requested") != wanted or not rec.get("path"):
        return None
    path = dst.parent / Path(str(rec["path"])).name   # older (download) markers: relative to OUT, no mode
    if not path.is_file():
        return None
    return CutResult(str(path), int(rec["start_frame"]), int(rec["end_frame"]), int(rec["num_frames"]),
                     str(rec.get("mode") or mode), rec.get("width"), rec.get("height"), rec.get("start_s"),
                     rec.get("end_s"), resumed=True)


def _write_marker(marker: Path, res: CutResult, wanted: list) -> None:
    import json

    record = {"path": Path(res.path).name, "start_frame": res.start_frame, "end_frame": res.end_frame,
              "num_frames": res.num_frames, "mode": res.mode, "width": res.width, "height": res.height,
              "start_s": res.start_s, "end_s": res.end_s, "requested": wanted}
    atomic_write(marker, json.dumps(record), fsync=False)  # temp names are per thread: download cuts in threads
