"""load_image on every pixel format and every kind of broken file a dataset folder collects."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.data.images import MAX_IMAGE_PIXELS, ImageSkip, dhash, load_image


def _png(width: int, height: int, bit_depth: int, color_type: int, raw: bytes) -> bytes:
    """A PNG assembled by hand (Pillow cannot write 16-bit RGB, nor lie about its size)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _pixels(path: Path) -> np.ndarray:
    image = load_image(path)
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def _skip_reason(path: Path) -> str:
    with pytest.raises(ImageSkip) as err:
        load_image(path)
    return err.value.reason


def test_exif_orientation_6_is_applied(tmp_path):
    stored = Image.new("RGB", (40, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 20, 20))  # red left half as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)

    pixels = _pixels(tmp_path / "phone.jpg")
    assert pixels.shape == (40, 20, 3), "width and height swap"
    top, bottom = pixels[5, 10], pixels[35, 10]
    assert top[0] > 200 and top[2] < 50, f"the stored left (red) half must end up on top, got {top}"
    assert bottom[2] > 200 and bottom[0] < 50, f"the stored right (blue) half must end up below, got {bottom}"


def test_transparency_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 255))
    rgba.paste((0, 0, 0, 0), (0, 0, 16, 32))  # left half transparent *black*
    rgba.save(tmp_path / "rgba.png")
    pixels = _pixels(tmp_path / "rgba.png")
    assert (pixels[:, :16] == 255).all(), "transparent black must come out white, not black"
    assert (pixels[:, 16:] == [255, 0, 0]).all()

    la = Image.new("LA", (32, 32), (60, 255))
    la.paste((0, 0), (0, 0, 32, 8))  # top band transparent
    la.save(tmp_path / "la.png")
    pixels = _pixels(tmp_path / "la.png")
    assert (pixels[:8] == 255).all() and (pixels[8:] == 60).all()

    palette = Image.new("P", (32, 32), 1)
    palette.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    palette.paste(0, (0, 0, 16, 32))  # index 0 (black) is the transparent one
    palette.save(tmp_path / "palette.png", transparency=0)
    pixels = _pixels(tmp_path / "palette.png")
    assert (pixels[:, :16] == 255).all() and (pixels[:, 16:] == [10, 200, 10]).all()


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)
    r, g, b = _pixels(tmp_path / "cmyk.jpg")[16, 16]
    assert r > 230 and g < 30 and b < 30, f"CMYK (0, 100%, 100%, 0) is red, got {(r, g, b)}"


def test_16_bit_grey_png_is_scaled_not_clipped_to_white(tmp_path):
    mid_grey = 32896  # 128 * 257
    raw = (b"\x00" + struct.pack(">H", mid_grey) * 24) * 24
    (tmp_path / "grey16.png").write_bytes(_png(24, 24, 16, 0, raw))
    assert Image.open(tmp_path / "grey16.png").convert("RGB").getpixel((0, 0)) == (255, 255, 255), (
        "premise: Pillow's own conversion turns this image white"
    )
    assert (_pixels(tmp_path / "grey16.png") == 128).all()

    ramp = b"".join(b"\x00" + b"".join(struct.pack(">H", v * 2849) for v in range(24)) for _ in range(24))
    (tmp_path / "ramp16.png").write_bytes(_png(24, 24, 16, 0, ramp))
    row = _pixels(tmp_path / "ramp16.png")[0, :, 0]
    assert row[0] == 0 and row[-1] == round(23 * 2849 / 257) and (np.diff(row) > 0).all()


def test_16_bit_rgb_png_keeps_its_colours(tmp_path):
    raw = (b"\x00" + struct.pack(">HHH", 32896, 65535, 0) * 20) * 20
    (tmp_path / "rgb16.png").write_bytes(_png(20, 20, 16, 2, raw))
    assert (_pixels(tmp_path / "rgb16.png") == [128, 255, 0]).all()


def test_one_bit_and_grey_and_gif_first_frame(tmp_path):
    bilevel = Image.new("1", (32, 32), 1)
    bilevel.paste(0, (0, 0, 32, 8))
    bilevel.save(tmp_path / "bilevel.png")
    pixels = _pixels(tmp_path / "bilevel.png")
    assert (pixels[:8] == 0).all() and (pixels[8:] == 255).all()

    Image.new("L", (20, 20), 77).save(tmp_path / "grey.png")
    assert (_pixels(tmp_path / "grey.png") == 77).all()

    frames = [Image.new("RGB", (32, 32), colour) for colour in ((0, 0, 255), (255, 255, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert Image.open(tmp_path / "anim.gif").n_frames == 2
    r, g, b = _pixels(tmp_path / "anim.gif")[0, 0]
    assert b > 200 and r < 50 and g < 50, "the first (blue) frame, not the yellow one"


def test_broken_files_are_skipped_with_their_reason(tmp_path):
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(png, "PNG")
    (tmp_path / "header_only.png").write_bytes(png.getvalue()[:10])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("shopping list: film, batteries\n")
    (tmp_path / "page.jpg").write_text("<!DOCTYPE html><html><body>403 Forbidden</body></html>")
    (tmp_path / "noise.png").write_bytes(bytes(range(256)) * 4)

    assert _skip_reason(tmp_path / "cut.jpg") == "truncated file"
    assert _skip_reason(tmp_path / "header_only.png") == "truncated file (PNG header cut short)"
    assert _skip_reason(tmp_path / "empty.png") == "zero-byte file"
    assert _skip_reason(tmp_path / "notes.jpg") == "not an image (a text file)"
    assert _skip_reason(tmp_path / "page.jpg") == "not an image (an HTML page saved with an image extension)"
    assert _skip_reason(tmp_path / "noise.png") == "not an image (unrecognised file format)"


def test_macos_resource_forks_are_skipped_even_when_they_decode(tmp_path):
    (tmp_path / "__MACOSX").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "__MACOSX" / "photo.jpg")
    (tmp_path / "._photo.jpg").write_bytes(b"\x00\x05\x16\x07" + b"\x00" * 60)
    assert _skip_reason(tmp_path / "__MACOSX" / "photo.jpg") == "macOS resource fork"
    assert _skip_reason(tmp_path / "._photo.jpg") == "macOS resource fork"


def test_size_limits(tmp_path):
    Image.new("RGB", (5, 5)).save(tmp_path / "dot.png")
    assert _skip_reason(tmp_path / "dot.png") == "image too small (5×5 px)"

    # headers claiming huge sizes: refused before any pixel is decoded
    (tmp_path / "big.png").write_bytes(_png(9000, 9000, 8, 2, b"\x00" * 16))
    reason = _skip_reason(tmp_path / "big.png")
    assert 9000 * 9000 > MAX_IMAGE_PIXELS
    assert reason.startswith("image too large (9000×9000 px") and "decompression bomb" in reason
    (tmp_path / "bomb.png").write_bytes(_png(100_000, 100_000, 8, 2, b"\x00" * 16))
    reason = _skip_reason(tmp_path / "bomb.png")
    assert reason.startswith("image too large") and "decompression bomb" in reason


def test_loaded_image_is_detached_from_its_file(tmp_path):
    Image.new("RGB", (32, 32), (9, 8, 7)).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png")
    (tmp_path / "a.png").unlink()
    assert image.getpixel((3, 3)) == (9, 8, 7)


def test_dhash_matches_copies_and_separates_different_pictures(tmp_path):
    rng = np.random.default_rng(1)
    picture = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).resize((64, 64))
    other = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).resize((64, 64))
    picture.save(tmp_path / "a.png")
    picture.save(tmp_path / "a.bmp")
    assert dhash(load_image(tmp_path / "a.png")) == dhash(load_image(tmp_path / "a.bmp"))
    assert dhash(picture) != dhash(other)
    assert dhash(Image.new("RGB", (32, 32), "red")) != dhash(Image.new("RGB", (32, 32), "blue")), (
        "flat images of different colours are not duplicates"
    )
