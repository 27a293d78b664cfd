"""Video IO on PyAV: probe without decoding, and threaded decoding at the size/stride the stages ask for.

Frame indices are positions in *presentation order* among the frames the stream really holds (packets
with data, sorted by pts) — not ``t * nominal_fps``, which lies for variable-frame-rate or damaged files
(a real AVI's header claims 444 frames and holds 68). Times are seconds from the first frame.
"""

from __future__ import annotations

import errno
import heapq
import os
import re
import stat
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from soraprep.types import VideoInfo
from soraprep.video.orient import coded_size, display_rotation, display_size, rotate_array

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.,-]+:")  # a URL or FFmpeg protocol prefix (one letter: a drive)
#: Largest frame we agree to decode (width * height); bigger ones are refused before decoding.
MAX_PIXELS = 8192 * 8192
#: Smallest side we agree to analyse: a 16x16 picture is one macroblock; anything smaller holds no usable
#: picture, and the analysis views (half size) and optical flow need a few pixels to work on.
MIN_SIDE = 16


class VideoError(Exception):
    """A video that cannot be used; ``kind`` is short and machine-readable (becomes ``error.kind``)."""

    def __init__(self, kind: str, message: str):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


#: URL schemes FFmpeg may open; anything else ("file:", "concat:", "pipe:", "data:", "subfile,...:") is refused
URL_SCHEMES = ("http", "https")


def not_a_file(path: str | os.PathLike) -> tuple[str, str] | None:
    """(kind, message) when ``path`` is not a regular file (or a link to one); None when it is.

    Uses ``stat`` only: a FIFO, socket or device is never opened (opening a FIFO blocks forever).
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink_loop", f"{os.fsdecode(path)}: symbolic link loop"
        if os.path.islink(path):
            return "not_found", f"{os.fsdecode(path)}: symbolic link to a missing file ({os.readlink(path)})"
        if exc.errno == errno.ENOENT:
            return "not_found", f"no such file: {os.fsdecode(path)}"
        return "unreadable", f"{os.fsdecode(path)}: {exc.strerror or exc}"
    if stat.S_ISREG(st.st_mode):
        return None
    if stat.S_ISDIR(st.st_mode):
        return "is_a_directory", f"{os.fsdecode(path)} is a folder named like a video, not a video file"
    what = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
            else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "not a file")
    return "not_a_regular_file", f"{os.fsdecode(path)} is {what}, not a video file"


def open_container(path: str | os.PathLike):
    """Open with PyAV, turning failures into :class:`VideoError` with a precise kind.

    Local files are opened by absolute path (so FFmpeg never reads ``concat:x`` or ``pipe:0`` in a name
    as a protocol) and only when ``stat`` says they are regular files (a FIFO would block forever).
    """
    path = os.fspath(path)
    path = os.fsdecode(path) if isinstance(path, bytes) else path
    if not os.path.lexists(path) and ("://" in path or _SCHEME.match(path)):
        if path.split(":", 1)[0].lower() not in URL_SCHEMES:
            raise VideoError("unsupported_source", f"{path[:200]}: not a local file or an http(s) URL")
    else:
        shown, path = path, os.path.abspath(path)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise VideoError("not_found", f"no such file: {shown}") from None
        except (OSError, ValueError) as exc:  # a symlink loop, a name too long, a NUL in the name...
            raise VideoError("not_found", f"{shown[:300]}: {getattr(exc, 'strerror', None) or exc}") from None
        if not stat.S_ISREG(st.st_mode):
            raise VideoError("not_a_regular_file", f"{shown} is not a regular file (a folder, FIFO, socket or device)")
        if not os.access(path, os.R_OK):
            raise VideoError("unreadable", f"permission denied: {shown}")
        if st.st_size == 0:
            raise VideoError("empty_file", f"zero-byte file: {shown}")
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.InvalidDataError as exc:
        if "://" not in path:
            from soraprep.video.sniff import sniff_file

            family = sniff_file(path)
            if family is not None:  # a video container's header, but FFmpeg cannot open the rest
                raise VideoError("damaged_container", f"{family} header found but the file cannot be opened "
                                 f"(truncated or incomplete download? fetch it again): {exc}") from exc
        raise VideoError("not_a_video", f"not a recognised media container: {exc}") from exc
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoError("open_failed", str(exc)) from exc
    if not container.streams.video:
        kind = "audio_only" if container.streams.audio else "no_video_stream"
        container.close()
        raise VideoError(kind, f"{path} has no video stream")
    return container


@dataclass(frozen=True)
class PacketIndex:
    """Where the frames and keyframes of the first video stream are, from demuxing alone (no decode)."""

    pts: np.ndarray          # int64, presentation timestamps of frames, sorted (display order)
    keyframe: np.ndarray     # bool, same order: is this frame a keyframe (random access point)
    time_base: Fraction
    start_pts: int           # pts of the first frame (time 0)
    reorders: bool           # decode order differs from display order (B-frames)
    synthetic: bool = False  # the stream carries no timestamps (raw Annex-B H.264...): pts = packet number * step
    packed_b: bool = False   # MPEG-4 part 2 with "packed B-frames" (DivX/Xvid in AVI): packet pts are guesses
    pts_guessed: bool = False  # AVI with B-frames: no real pts, the demuxer derives them from decode order
    entries: np.ndarray | None = None    # packed B-frames: frames where decoding may start (closed-GOP I-VOPs)
    entry_dts: np.ndarray | None = None  # ... and the dts of their chunks, to seek to

    def __len__(self) -> int:
        return len(self.pts)

    def time_of(self, index: int) -> float:
        """Seconds from the first frame to frame ``index`` (``index == len`` gives the end of the last frame)."""
        if index < len(self.pts):
            return float((int(self.pts[index]) - self.start_pts) * self.time_base)
        return self.end_time

    @property
    def end_time(self) -> float:
        if len(self.pts) == 0:
            return 0.0
        step = int(np.median(np.diff(self.pts))) if len(self.pts) > 1 else 0
        return float((int(self.pts[-1]) + step - self.start_pts) * self.time_base)


_VOP = b"\x00\x00\x01\xb6"   # MPEG-4 part 2 picture (VOP) start code
_DIVX_PACKED = re.compile(rb"DivX\d+(?:b|Build)\d+p")   # user data that switches FFmpeg to packed mode


def _frame_step(stream, time_base: Fraction) -> int:
    """One frame's duration in ``time_base`` units, from the stream's nominal rate (25 fps when unknown)."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    rate = Fraction(rate) if rate else Fraction(25)
    return max(1, int(round(1 / (rate * time_base))))


def _vop_types(data: bytes, out: list[str], packed: bool) -> bool:
    """Append the picture types of one MPEG-4 part 2 packet to ``out``; returns whether the stream is packed.

    DivX/Xvid "packed bitstream": an AVI chunk holds a reference VOP plus the B-VOP shown before it, and a
    later tiny chunk (an "N-VOP", at most 19 bytes, FFmpeg's ``MAX_NVOP_SIZE``) stands in for the frame
    slot; the decoder (and ``mpeg4_unpack_bframes``) carry the B-VOP over, so the N-VOP adds no picture.
    """
    at = data.find(_VOP)
    found = []
    while 0 <= at < len(data) - 4:
        found.append("IPBS"[data[at + 4] >> 6])
        at = data.find(_VOP, at + 4)
    if packed and len(data) <= 19 and len(found) == 1:
        return packed
    out.extend(found)
    return packed or len(found) > 1


def _display_keyframes(vops: list[str]) -> np.ndarray:
    """Keyframe flags in display order from picture types in decode order (a B-VOP is shown at once; a
    reference VOP after the B-VOPs that follow it)."""
    key = np.zeros(len(vops), dtype=bool)
    shown, ref = 0, None
    for kind in vops:
        if kind == "B":
            shown += 1
            continue
        if ref is not None:
            key[shown] = ref == "I"
            shown += 1
        ref = kind
    if ref is not None:
        key[shown] = ref == "I"
    return key


def scan_packets(path: str | os.PathLike, container=None) -> PacketIndex:
    """Demux (never decode) the first video stream and index its frames in display order.

    A stream without any timestamp (raw Annex-B H.264, some elementary streams) is indexed by packet
    number (``synthetic``); decoding then numbers frames in output order.
    """
    own = container is None
    container = container or open_container(path)
    pts: list[int] = []
    key: list[bool] = []
    untimed: list[bool] = []   # keyframe flags of packets without any timestamp
    vops: list[str] = []       # MPEG-4 part 2: picture types in decode order, N-VOPs left out
    entry: list[tuple[int, int]] = []
    packed = False
    try:
        stream = container.streams.video[0]
        time_base = Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)
        cc = stream.codec_context
        check_packed = cc is not None and cc.name == "mpeg4"
        # AVI stores no presentation times: with B-frames the demuxer's pts follow decode order
        guessed = container.format.name == "avi" and cc is not None and bool(cc.has_b_frames)
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if packet.pts is None and packet.dts is None:
                untimed.append(bool(packet.is_keyframe))
                continue
            p = packet.pts if packet.pts is not None else packet.dts
            pts.append(p)
            key.append(bool(packet.is_keyframe))
            if check_packed:
                data = bytes(packet)
                n = len(vops)
                packed = _vop_types(data, vops, packed)
                if vops[n:] == ["I"] and packet.dts is not None and _DIVX_PACKED.search(data):
                    entry.append((n, packet.dts))   # a lone I-VOP that tells the decoder "packed"
    except av.error.FFmpegError as exc:
        if not pts and not untimed:
            raise VideoError("demux_failed", str(exc)) from exc
    finally:
        if own:
            container.close()
    synthetic = bool(untimed and not pts)
    if synthetic:
        arr = np.arange(len(untimed), dtype=np.int64) * _frame_step(stream, time_base)
        key = untimed
    else:  # untimed packets among timed ones cannot be placed: they are left out
        arr = np.asarray(pts, dtype=np.int64)
    order = np.argsort(arr, kind="stable")
    keyframe = np.asarray(key, dtype=bool)[order]
    entries = entry_dts = None
    if packed and len(vops) == len(arr):
        keyframe = _display_keyframes(vops)   # the demuxer's pts are guesses: trust the picture types
        # closed GOP (no B-VOP right after the I-VOP): every earlier picture is shown before it, so its
        # display index is its decode position and decoding from its chunk numbers frames by count
        ok = [(n, d) for n, d in entry if n + 1 >= len(vops) or vops[n + 1] != "B"]
        entries = np.asarray([n for n, _ in ok], dtype=np.int64)
        entry_dts = np.asarray([d for _, d in ok], dtype=np.int64)
    return PacketIndex(
        pts=arr[order], keyframe=keyframe, time_base=time_base,
        start_pts=int(arr[order][0]) if len(arr) else 0,
        reorders=bool(len(arr) and np.any(order != np.arange(len(arr)))) or packed,
        synthetic=synthetic, packed_b=packed, pts_guessed=guessed or packed, entries=entries, entry_dts=entry_dts,
    )


def entry_point(index: PacketIndex, frame: int) -> tuple[int, int] | None:
    """For a packed-B stream: the last frame ``<= frame`` (and > 0) where decoding may start by seeking,
    with the dts to seek to; ``None`` when there is none (decode from the first frame)."""
    if index.entries is None or not len(index.entries):
        return None
    j = int(np.searchsorted(index.entries, frame, side="right")) - 1
    if j < 0 or index.entries[j] == 0:
        return None
    return int(index.entries[j]), int(index.entry_dts[j])


def probe_with_index(path: str | os.PathLike) -> tuple[VideoInfo, PacketIndex]:
    """:func:`probe` plus the packet index it demuxed to count frames, so callers need not demux again."""
    kept: list[PacketIndex] = []
    info = probe(path, _keep_index=kept)
    return info, kept[0]


def probe(path: str | os.PathLike, *, count_frames: bool = True, _keep_index: list | None = None) -> VideoInfo:
    """Container and stream metadata without decoding any frame.

    With ``count_frames`` (default) the packets are demuxed (not decoded) to count frames exactly and to
    detect variable frame rate; otherwise the header's count (or duration x fps) is used and
    ``frames_exact`` is False.
    """
    path = str(path)
    container = open_container(path)
    try:
        stream = container.streams.video[0]
        cc = stream.codec_context
        if cc is None:
            raise VideoError("unsupported_codec", "no decoder for this video stream's codec "
                             f"(container {container.format.name})")
        codec = cc.name
        width, height = int(cc.width or 0), int(cc.height or 0)
        if width <= 0 or height <= 0:
            raise VideoError("no_dimensions", "video stream reports no frame size (codec unsupported?)")
        if width * height > MAX_PIXELS:
            raise VideoError("too_large", f"{width}x{height} exceeds the {MAX_PIXELS} pixel limit")
        if min(width, height) < MIN_SIDE:
            raise VideoError("too_small", f"{width}x{height} frames are below the {MIN_SIDE}x{MIN_SIDE} minimum "
                             "(too small to analyse or train on)")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        nominal = Fraction(rate) if rate else None
        tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)
        duration = (float(stream.duration * tb) if stream.duration else
                    float(container.duration) / 1e6 if container.duration else 0.0)
        fmt_name = container.format.name
        bit_rate = int(container.bit_rate) if container.bit_rate else None
        has_audio = bool(container.streams.audio)
        pix_fmt = str(cc.pix_fmt or "") if cc else ""
        index = scan_packets(path, container) if count_frames or _keep_index is not None else None
        if _keep_index is not None:
            _keep_index.append(index)
    except av.error.FFmpegError as exc:
        raise VideoError("probe_failed", str(exc)) from exc
    finally:
        container.close()
    vfr = False
    if index is not None and len(index):
        n, exact = len(index), True
        if n > 1:
            deltas = np.diff(index.pts)
            med = float(np.median(deltas))
            vfr = bool(med > 0 and (np.max(np.abs(deltas - med)) > 0.5 * med))
            duration = index.end_time
        if nominal is None or vfr:
            # variable or missing rate: the average over the real frames is the honest rate
            nominal = Fraction(n / duration).limit_denominator(1001) if duration > 0 else Fraction(25)
    else:
        if nominal is None:
            nominal = Fraction(25)
        n, exact = (int(stream.frames) if stream.frames else int(round(duration * nominal))), False
    if n <= 0:
        raise VideoError("no_frames", "the video stream holds no frames")
    rotation = display_rotation(path)
    disp_w, disp_h = display_size(width, height, rotation)
    try:
        size_bytes = os.path.getsize(path)
    except OSError:
        size_bytes = 0
    return VideoInfo(
        path=path, container=fmt_name, duration_s=duration, fps=nominal, num_frames=n,
        frames_exact=exact, width=disp_w, height=disp_h, coded_width=width, coded_height=height,
        rotation=rotation, codec=codec, pix_fmt=pix_fmt, bit_rate=bit_rate, has_audio=has_audio, vfr=vfr, size_bytes=size_bytes,
        start_time_s=float(index.start_pts * tb) if index is not None and len(index) else 0.0, time_base=tb,
    )


def analysis_size(width: int, height: int, size: int | tuple[int, int] | None) -> tuple[int, int]:
    """Target (width, height): ``None`` native, an int is the short side (even numbers), a tuple as given."""
    if size is None:
        return width, height
    if isinstance(size, tuple):
        return int(size[0]), int(size[1])
    short = min(width, height)
    if short <= size:
        return width, height
    scale = size / short
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


@dataclass(frozen=True)
class DecodedFrame:
    index: int           # position in display order (see module docstring)
    time: float          # seconds from the first frame
    key: bool
    array: np.ndarray


def decode(path: str | os.PathLike, *, start_frame: int = 0, end_frame: int | None = None,
           size: int | tuple[int, int] | None = None, fmt: str | None = "rgb24", stride: int = 1,
           keyframes_only: bool = False, threads: bool = True, index: PacketIndex | None = None,
           interpolation: str = "FAST_BILINEAR", upright: bool = False) -> Iterator[DecodedFrame]:
    """Decode frames ``[start_frame, end_frame)`` once, every ``stride``-th, converted to ``fmt`` at ``size``.

    Frames come in display order with strictly increasing indices and times (see :func:`_in_order`).
    ``fmt=None`` yields the ``av.VideoFrame`` objects unconverted (for re-encoding; never turned), their
    ``pts`` set to the corrected timestamp. ``upright=True`` turns the arrays by the file's display
    rotation (:func:`display_rotation`), so they look as a player shows them; a ``(width, height)``
    ``size`` is then the displayed size. Seeks to the keyframe before ``start_frame`` when it is not 0;
    when the seek lands too late or yields no frame of the span, decodes from the beginning instead.
    Damaged packets in the middle are skipped by the decoder; a stream that fails outright raises
    :class:`VideoError` (``decode_failed``).
    """
    if stride < 1:
        raise ValueError("stride must be >= 1")
    if upright and fmt is not None and fmt.startswith(("yuv", "nv", "gbrp")):
        raise ValueError(f"upright=True needs a packed format (rgb24, bgr24, gray...), not {fmt}")
    rotation = display_rotation(path) if upright and fmt is not None else 0
    if rotation and isinstance(size, tuple):
        size = coded_size(int(size[0]), int(size[1]), rotation)
    if (start_frame > 0 or end_frame is not None or keyframes_only) and index is None:
        index = scan_packets(path)
    if index is not None and start_frame >= len(index):
        return
    # untimed and packed-B streams are numbered by counting frames: seek only to a packed-B entry point
    seek = start_frame > 0 and index is not None and not index.synthetic and not index.packed_b
    entry = entry_point(index, start_frame) if start_frame > 0 and index is not None and index.packed_b else None
    if entry is not None:
        seek = True
    elif seek:
        keys = np.flatnonzero(index.keyframe[: start_frame + 1])
        seek = bool(len(keys) and keys[-1] > 0)   # the only keyframe before the span is the first frame
    while True:
        retry = False
        for f in _decode_once(path, start_frame, end_frame, size, fmt, stride, keyframes_only, threads, index,
                              interpolation, seek, entry if seek else None):
            if f is None:       # the seek landed after start_frame or yielded nothing (e.g. MPEG-PS/TS)
                retry = True
                break
            yield DecodedFrame(f.index, f.time, f.key, rotate_array(f.array, rotation)) if rotation else f
        if not retry:
            return
        seek = False            # decode from the beginning instead: slower, always right


def _tolerant_decode(container, stream, errors: list, first_dts: list) -> Iterator:
    """``container.decode(stream)``, except that a packet the decoder rejects is skipped (as the ffmpeg
    tool does: e.g. an open-GOP B-frame right after a seek, or a damaged packet) and kept in ``errors``.
    The dts of the first non-empty packet goes to ``first_dts``."""
    for packet in container.demux(stream):
        if not first_dts and packet.size:
            first_dts.append(packet.dts)
        try:
            yield from packet.decode()
        except av.error.InvalidDataError as exc:
            errors.append(exc)


#: Frames of look-ahead used to put the decoder's timestamps back in increasing order.
REORDER_DEPTH = 4


def _in_order(frames) -> Iterator[tuple[object, int | None]]:
    """``(frame, timestamp)`` in the order the decoder returns frames, which is display order.

    The decoder's *pictures* are in display order but their timestamps need not be: with MPEG-4 "packed
    B-frames" (DivX/Xvid in AVI) each frame inherits the guessed pts of the packet that released it, so
    pts run 3, 5, 4, 6, 8, 7, ... while the pictures are right (checked against the stream unpacked with
    ``mpeg4_unpack_bframes``); H.264 with B-frames in AVI is alike (pts 1, 4, 3, 5, 2, ...). Each frame
    gets the smallest timestamp among the next :data:`REORDER_DEPTH` frames (a small heap; the window
    doubles, up to 4x, when a timestamp arrives later than that): the same set of timestamps, strictly
    increasing, the pictures untouched. Correctly stamped streams come out unchanged. ``None`` when a
    frame has neither pts nor dts.
    """
    queue: deque = deque()
    heap: list[int] = []
    depth, last = REORDER_DEPTH, None
    for frame in frames:
        t = frame.pts if frame.pts is not None else frame.dts
        queue.append((frame, t is not None))
        if t is not None:
            heapq.heappush(heap, t)
            if last is not None and t < last and depth < 4 * REORDER_DEPTH:
                depth *= 2   # displaced further than the window: widen it (this one frame is numbered late)
        if len(queue) > depth:
            f, timed = queue.popleft()
            if timed:
                last = heapq.heappop(heap)
            yield f, last if timed else None
    while queue:
        f, timed = queue.popleft()
        yield f, heapq.heappop(heap) if timed else None


def _decode_once(path, start_frame, end_frame, size, fmt, stride, keyframes_only, threads, index,
                 interpolation, seek, entry=None) -> Iterator[DecodedFrame | None]:
    container = open_container(path)
    try:
        stream = container.streams.video[0]
        if threads:
            stream.thread_type = "AUTO"
        if keyframes_only:
            stream.codec_context.skip_frame = "NONKEY"
        start_pts = index.start_pts if index is not None else None
        last = -1
        if entry is not None:   # packed B-frames: frames are counted from the entry's I-VOP
            container.seek(entry[1], stream=stream, backward=True, any_frame=False)
            last = entry[0] - 1
        elif seek:
            keys = np.flatnonzero(index.keyframe[: start_frame + 1])
            seek_to = int(index.pts[keys[-1]]) if len(keys) else int(index.pts[0])
            container.seek(seek_to, stream=stream, backward=True, any_frame=False)
        tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)
        by_count = index is None or index.synthetic or index.packed_b   # number frames in output order
        keys_at = np.flatnonzero(index.keyframe) if index is not None and keyframes_only else None
        w = h = None
        first = True
        reached = False   # a frame at or after start_frame came out
        errors: list[Exception] = []
        first_dts: list = []
        for frame, t in _in_order(_tolerant_decode(container, stream, errors, first_dts)):
            if by_count or t is None:
                i = last + 1
                if keyframes_only and index is not None:   # only keyframes come out: the next one
                    later = keys_at[keys_at > last]
                    i = int(later[0]) if len(later) else len(index)
                if index is not None:
                    if i >= len(index):
                        break
                    t = int(index.pts[i])
                elif t is None:
                    t = start_pts if start_pts is not None else 0
            else:
                i = int(np.searchsorted(index.pts, t))
                if i >= len(index) or index.pts[i] != t:
                    continue  # a frame the demuxer did not list (should not happen): skip rather than misnumber
            if i <= last:
                continue      # a repeated timestamp: keep the numbering strictly increasing
            last = i
            if start_pts is None:
                start_pts = t
            if first:
                first = False
                if frame.width * frame.height > MAX_PIXELS:
                    raise VideoError("too_large", f"decoded frames are {frame.width}x{frame.height}, over the "
                                     f"{MAX_PIXELS} pixel limit (the container header said otherwise)")
                if seek and (i > start_frame or entry is not None and first_dts[:1] != [entry[1]]) \
                        and not keyframes_only:
                    yield None   # overshot, or (packed B) did not land on the entry's chunk
                    return
            if i < start_frame:
                continue
            reached = True
            if end_frame is not None and i >= end_frame:
                break
            if (i - start_frame) % stride:
                continue
            if fmt is None:  # the caller wants the av.VideoFrame itself (e.g. to re-encode it)
                frame.pts = t
                arr = frame
            else:
                if w is None:
                    w, h = analysis_size(frame.width, frame.height, size)
                arr = frame.to_ndarray(width=w, height=h, format=fmt, interpolation=interpolation)
            yield DecodedFrame(i, float((t - start_pts) * tb), bool(frame.key_frame), arr)
        if seek and not reached and not keyframes_only:
            yield None    # the seek produced nothing from the span: decode from the start instead
        elif errors and last < 0:
            raise errors[0]
    except av.error.FFmpegError as exc:
        raise VideoError("decode_failed", str(exc)) from exc
    finally:
        container.close()


def iter_frames(path: str | os.PathLike, *, start_frame: int = 0, end_frame: int | None = None,
                size: int | tuple[int, int] | None = None, fmt: str = "rgb24",
                stride: int = 1, upright: bool = False) -> Iterator[tuple[int, np.ndarray]]:
    """``(frame_index, array)`` pairs; see :func:`decode`."""
    for f in decode(path, start_frame=start_frame, end_frame=end_frame, size=size, fmt=fmt, stride=stride,
                    upright=upright):
        yield f.index, f.array


def read_frames(path: str | os.PathLike, indices: Sequence[int], *, size: int | tuple[int, int] | None = None,
                fmt: str = "rgb24", upright: bool = False) -> list[np.ndarray]:
    """The frames at ``indices`` (any order, repeats allowed), from one decode pass (``upright``: see
    :func:`decode`)."""
    if not indices:
        return []
    wanted = sorted(set(int(i) for i in indices))
    got: dict[int, np.ndarray] = {}
    for f in decode(path, start_frame=wanted[0], end_frame=wanted[-1] + 1, size=size, fmt=fmt, upright=upright):
        if f.index in wanted:
            got[f.index] = f.array
    missing = [i for i in wanted if i not in got]
    if missing:
        raise VideoError("frames_missing", f"could not decode frames {missing[:10]} of {path}")
    return [got[int(i)] for i in indices]


def video_id_for(path: str | os.PathLike) -> str:
    """A stable, readable id for a local file: its stem plus a short hash of its absolute path."""
    import hashlib

    p = Path(path)
    digest = hashlib.sha1(os.fsencode(os.path.abspath(p))).hexdigest()[:8]  # fsencode: any file name
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in p.stem)[:48] or "video"
    return f"{stem}-{digest}"
