"""Is a TIFF file whole? Its directories checked against the file's size (standard library only).

A GeoTIFF cut short (an interrupted download or copy) often still opens: GDAL
reads the first directory, and only a later block read fails, with a message
that names neither the whole path nor the cause, or the georeferencing tags
stored at the end are dropped and the file looks like one without a CRS.
:func:`tiff_damage` reads the TIFF directories (classic TIFF and BigTIFF, every
IFD of the chain and the SubIFDs) and reports the first thing that lies past
the end of the file: a directory, a tag's value, a strip or a tile.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from pathlib import Path

#: Bytes per value of each TIFF field type (unknown types are skipped).
FIELD_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4,
               16: 8, 17: 8, 18: 8}
#: Data offset tag -> its byte-count tag (StripOffsets, TileOffsets).
DATA_TAGS = {273: 279, 324: 325}
SUBIFDS = 330
#: Directories followed at most (a loop or a corrupt chain stops here).
MAX_IFDS = 10_000

_ARRAY_CODES = {1: "B", 3: "H", 4: "I", 13: "I", 16: "Q", 18: "Q"}
_MAGICS = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


def _values(f, entry: tuple[int, int, bytes, int], order: str, off_fmt: str) -> list[int] | None:
    """The integer values of a directory entry (inline or at its offset); None for other types."""
    ftype, count, field, nbytes = entry
    code = _ARRAY_CODES.get(ftype)
    if code is None or array(code).itemsize != FIELD_BYTES[ftype]:
        return None
    if nbytes > len(field):
        f.seek(struct.unpack(off_fmt, field)[0])
        data = f.read(nbytes)
    else:
        data = field[:nbytes]
    arr = array(code)
    arr.frombytes(data)
    if (order == "<") != (sys.byteorder == "little"):
        arr.byteswap()
    return arr.tolist()


def tiff_damage(path: str | os.PathLike) -> str | None:
    """Why the TIFF file ``path`` is truncated or corrupt, or None if its structure fits the file.

    Not a TIFF (other magic bytes): None, the format's own reader decides. The
    check reads only the directories and the strip/tile offset tables, not the
    image data, so it is cheap even for large rasters.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "truncated or corrupt: the file is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(16)
        if not any(m.startswith(head[:4]) for m in _MAGICS):
            return None
        big = head[2:4] in (b"+\0", b"\0+")
        if len(head) < (16 if big else 8):
            return f"truncated: the file has only {size} bytes, less than a TIFF header"
        e = "<" if head[:2] == b"II" else ">"
        first = struct.unpack(e + "Q", head[8:16])[0] if big else struct.unpack(e + "I", head[4:8])[0]
        count_fmt, off_fmt = (e + "Q", e + "Q") if big else (e + "H", e + "I")
        count_len, entry_len, off_len = (8, 20, 8) if big else (2, 12, 4)

        def past_end(end: int, what: str) -> str:
            return (f"truncated or corrupt: the file has {size:,} bytes but its TIFF structure puts {what} "
                    f"up to byte {end:,}")

        todo, seen = [first], set()
        while todo:
            ifd = todo.pop()
            if ifd == 0 or ifd in seen:
                continue
            if len(seen) >= MAX_IFDS:
                return f"corrupt: more than {MAX_IFDS} TIFF directories"
            seen.add(ifd)
            if ifd + count_len > size:
                return past_end(ifd + count_len, "a directory")
            f.seek(ifd)
            n = struct.unpack(count_fmt, f.read(count_len))[0]
            end = ifd + count_len + n * entry_len + off_len
            if end > size:
                return past_end(end, f"a directory of {n} entries")
            raw = f.read(n * entry_len + off_len)
            entries = {}
            for i in range(n):
                entry = raw[i * entry_len:(i + 1) * entry_len]
                tag, ftype = struct.unpack(e + "HH", entry[:4])
                count = struct.unpack(off_fmt, entry[4:4 + off_len])[0]
                field = entry[4 + off_len:]
                nbytes = count * FIELD_BYTES.get(ftype, 0)
                if nbytes > off_len:
                    offset = struct.unpack(off_fmt, field)[0]
                    if offset + nbytes > size:
                        return past_end(offset + nbytes, f"the value of tag {tag}")
                entries[tag] = (ftype, count, field, nbytes)
            todo.append(struct.unpack(off_fmt, raw[n * entry_len:])[0])
            if SUBIFDS in entries:
                todo.extend(_values(f, entries[SUBIFDS], e, off_fmt) or [])
            for off_tag, len_tag in DATA_TAGS.items():
                if off_tag in entries and len_tag in entries:
                    offsets = _values(f, entries[off_tag], e, off_fmt)
                    lengths = _values(f, entries[len_tag], e, off_fmt)
                    if offsets is None or lengths is None:
                        continue
                    data_end = max((o + c for o, c in zip(offsets, lengths) if c), default=0)
                    if data_end > size:
                        kind = "strips" if off_tag == 273 else "tiles"
                        return past_end(data_end, f"image data ({kind})")
    return None
