"""Opening user images safely: known formats only, a pixel limit, header-only reads.

Images come from users' archives and directories, so nothing about them is trusted:

* only plain raster formats are decoded (a file named ``x.png`` may hold anything, and
  some of PIL's formats run external programs, e.g. EPS through Ghostscript);
* an image's size is read from its header and checked against the operator's pixel
  limit before a single pixel is decoded (a 1 MB zip can hold a 15000x15000 PNG);
* sizing an image at submit time reads at most `HEADER_BYTES` of it, so a header padded
  with gigabytes (a huge PNG chunk) never lands in the API process's memory.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import IO, Any, cast

from .errors import InvalidSpecError

__all__ = ["HEADER_BYTES", "decode", "image_size"]

HEADER_BYTES = 16 << 20
_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "PPM", "TIFF")
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")  # in PIL's DecompressionBombError


class _HeaderOnly(io.RawIOBase):
    """A seekable read-only view of ``raw`` that refuses to read past ``limit`` bytes."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        super().__init__()
        self.raw, self.limit = raw, limit

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        room = self.limit - self.raw.tell()
        if room <= 0 < len(view):
            raise OSError(f"its header runs past {self.limit} bytes")
        data = self.raw.read(min(len(view), room))
        view[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()


def _open(fp: Path | IO[bytes], name: str, max_pixels: int) -> Any:
    """The lazily opened image (header read, no pixels decoded), within the pixel limit."""
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(fp, formats=_FORMATS)
    except Image.DecompressionBombError as e:  # PIL's own, higher limit (2 x 89M pixels)
        found = _BOMB_PIXELS.search(str(e))
        size = f" ({int(found[1]):,} pixels)" if found else ""
        raise InvalidSpecError(
            f"image {name!r}{size} is over this server's limit of {max_pixels:,} pixels "
            "(max_image_pixels); use smaller images"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InvalidSpecError(
            f"cannot read image {name!r} ({', '.join(_FORMATS)} are accepted): {e}"
        ) from None
    w, h = img.size
    if w * h > max_pixels:
        img.close()
        raise InvalidSpecError(
            f"image {name!r} is {w}x{h} = {w * h:,} pixels, over this server's limit of "
            f"{max_pixels:,} pixels (max_image_pixels); use smaller images"
        )
    return img


def image_size(fp: IO[bytes], name: str, max_pixels: int) -> tuple[int, int]:
    """``(height, width)`` of an image from its header alone (a seekable stream).

    Raises:
        InvalidSpecError: not an accepted format, over the pixel limit, or a header over
            `HEADER_BYTES`.
    """
    bounded = cast(IO[bytes], _HeaderOnly(fp, HEADER_BYTES))  # a binary stream, as PIL needs
    with _open(bounded, name, max_pixels) as img:
        w, h = img.size
    return (h, w)


def decode(path: Path, name: str, max_pixels: int) -> Any:
    """A fully decoded PIL image, refused before decoding when over the pixel limit.

    Raises:
        InvalidSpecError: not an accepted format, over the pixel limit, or corrupt.
    """
    img = _open(path, name, max_pixels)
    try:
        img.load()
    except (OSError, ValueError, SyntaxError) as e:
        img.close()
        raise InvalidSpecError(f"cannot read image {name!r}: {e}") from None
    return img
