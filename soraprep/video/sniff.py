"""Recognise video containers by their first bytes (magic numbers), not by file name.

Used by the folder scanner (a ``.mp4`` that is really an HTML error page is not a video; a video
without an extension is one), by the downloader (servers answer dead links with HTML and status 200) and by
:func:`soraprep.video.io.probe` (a damaged container is told from a file that is not a video at all).
A match means "a container that can hold video"; the probe then checks that a video stream is there.
"""

from __future__ import annotations

from pathlib import Path

HEAD_BYTES = 1024

VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mov", ".qt", ".mkv", ".webm", ".avi", ".flv", ".f4v", ".ts", ".mts", ".m2ts",
    ".mpg", ".mpeg", ".vob", ".wmv", ".asf", ".3gp", ".3g2", ".ogv", ".mxf", ".dv", ".h264", ".hevc",
})

#: ISO base-media brands that hold still images or audio only (HEIF, AVIF, M4A/M4B/M4P audio)
_NON_VIDEO_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif",
                               b"avis", b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "})



def sniff_container(head: bytes) -> str | None:
    """The container family of a file from its first bytes, or None if it is not a video container."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _NON_VIDEO_BRANDS:
            return None
        return "mov" if brand == b"qt  " else "mp4"
    if len(head) >= 8 and head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):
        return "mov"  # old QuickTime files without an ftyp box
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # also WebM
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:3] == b"FLV" and len(head) > 3 and head[3] == 1:
        return "flv"
    if len(head) >= 377 and head[0] == head[188] == head[376] == 0x47:
        return "mpegts"
    if len(head) >= 197 and head[4] == head[196] == 0x47:
        return "mpegts"  # M2TS: 192-byte packets with a 4-byte timestamp prefix
    if head[:4] == b"\x00\x00\x01\xba":
        return "mpegps"
    if head[:16] == bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"):
        return "asf"
    if head[:4] == b"OggS":
        return "ogg"  # may be audio only: the probe decides
    if head[:4] == bytes.fromhex("060e2b34"):
        return "mxf"
    return None


def sniff_file(path: str | Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            return sniff_container(fh.read(HEAD_BYTES))
    except OSError:
        return None
