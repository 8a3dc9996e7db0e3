"""Open one training image safely and return it as fully decoded 8-bit RGB.

Everything a real-world folder throws at a trainer ends here either as a clean RGB image or as an
`ImageSkip` whose `reason` tells the user what is wrong with the file: truncated downloads,
zero-byte files, HTML pages saved as `.jpg`, macOS resource forks, decompression bombs, images too
small to learn from. Pixel formats are converted with care: EXIF orientation is applied,
transparency is composited on white, 16-bit samples are scaled to 8 bits (a naive
`convert("RGB")` turns a 16-bit grey PNG white), CMYK becomes RGB, animations give their first frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")

# Image formats people drop into dataset folders that the trainer does not take: reported as
# skipped (with a hint) rather than ignored, so a folder of iPhone photos does not look empty.
UNSUPPORTED_IMAGE_EXTENSIONS = (
    ".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".svg", ".psd", ".dng", ".cr2", ".nef", ".arw",
)

# 8192 x 8192: larger than any training resolution needs, and below Pillow's own bomb threshold
# (89 MP warns, 179 MP raises), so every image Pillow objects to is refused here with a reason.
MAX_IMAGE_PIXELS = 8192 * 8192
MIN_IMAGE_SIDE = 16

_SIGNATURES = {
    b"\x89PNG": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"GIF8": "GIF",
    b"BM": "BMP",
}


class ImageSkip(Exception):
    """An image file the trainer cannot use; `reason` is short text for the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_resource_fork(path: Path) -> bool:
    """True for macOS zip debris: anything under `__MACOSX/` and AppleDouble `._name` files."""
    return "__MACOSX" in path.parts or path.name.startswith("._")


def load_image(path: Path, *, min_side: int = MIN_IMAGE_SIDE) -> Image.Image:
    """Decode `path` fully into an 8-bit RGB image, upright as its EXIF orientation says.

    Raises `ImageSkip` for anything that is not a usable image (see the module docstring).
    """
    path = Path(path)
    if is_resource_fork(path):
        raise ImageSkip("macOS resource fork")
    try:
        if path.stat().st_size == 0:
            raise ImageSkip("zero-byte file")
        with Image.open(path) as im:
            _check_size(im.size, min_side)
            im.load()
            upright = _apply_orientation(im)
    except UnidentifiedImageError as exc:
        raise ImageSkip(_not_an_image_reason(path)) from exc
    except Image.DecompressionBombError as exc:
        raise ImageSkip(f"image too large ({exc}); possible decompression bomb") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageSkip(_decode_error_reason(exc)) from exc
    return to_rgb(upright)


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparent pixels become white."""
    if im.mode.startswith("I;16") or im.mode == "I":
        # 16-bit grey: scale 0..65535 to 0..255 (65535 / 255 = 257). Mode "I" is how some
        # decoders hand over 16-bit samples; values outside 0..65535 are clipped.
        samples = np.asarray(im).astype(np.float64)
        grey = np.clip(np.rint(samples / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if im.mode == "F":
        raise ImageSkip("unsupported pixel format (32-bit float); save it as an 8- or 16-bit PNG")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode == "RGB":
        return im.copy()
    try:
        return im.convert("RGB")
    except ValueError as exc:
        raise ImageSkip(f"unsupported pixel format {im.mode} ({exc})") from exc


def dhash(im: Image.Image, size: int = 8) -> str:
    """Perceptual fingerprint for duplicate detection, as hex: a difference hash (horizontal +
    vertical brightness gradients, 2 × 64 bits) plus the mean colour of a 2 × 2 grid in 16 levels.

    Copies of one picture saved under another name or format get the same fingerprint; re-encoded
    (JPEG) or resized copies usually do, not always (a gradient near zero can flip a bit). The
    colour part keeps flat or low-detail pictures of different colours (whose gradients are all
    equal) apart.
    """
    grey = im.convert("L")
    horizontal = np.asarray(grey.resize((size + 1, size), Image.Resampling.BOX), dtype=np.int16)
    vertical = np.asarray(grey.resize((size, size + 1), Image.Resampling.BOX), dtype=np.int16)
    bits = np.concatenate([
        (horizontal[:, 1:] > horizontal[:, :-1]).ravel(),
        (vertical[1:, :] > vertical[:-1, :]).ravel(),
    ])
    colour = np.asarray(im.convert("RGB").resize((2, 2), Image.Resampling.BOX), dtype=np.uint8) // 16
    return np.packbits(bits).tobytes().hex() + colour.tobytes().hex()


def _check_size(size: tuple[int, int], min_side: int) -> None:
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageSkip(
            f"image too large ({width}×{height} px = {width * height / 1e6:.1f} MP, limit "
            f"{MAX_IMAGE_PIXELS / 1e6:.1f} MP); possible decompression bomb, or downscale it"
        )
    if min(width, height) < min_side:
        raise ImageSkip(f"image too small ({width}×{height} px)")


def _apply_orientation(im: Image.Image) -> Image.Image:
    try:
        upright = ImageOps.exif_transpose(im)
    except (SyntaxError, ValueError, TypeError, KeyError) as exc:
        raise ImageSkip(f"unreadable EXIF orientation ({exc})") from exc
    return upright


def _decode_error_reason(exc: BaseException) -> str:
    text = str(exc)
    if "truncated" in text.lower():
        return "truncated file"
    if isinstance(exc, PermissionError):
        return f"cannot read file ({exc.strerror})"
    return f"corrupt image data ({type(exc).__name__}: {text})"


def _not_an_image_reason(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(512)
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "truncated file (WebP header cut short)"
    for signature, fmt in _SIGNATURES.items():
        if head.startswith(signature):
            return f"truncated file ({fmt} header cut short)"
    if head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return "not an image (an HTML page saved with an image extension)"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut by the 512-byte window is still text
        if exc.start < len(head) - 3:
            return "not an image (unrecognised file format)"
    return "not an image (a text file)"
