"""The labelled grid.png of a comparison grid: column headers on top, a prompt + seed label per row.

Cells are shown between 128 and 512 px on their longer side: tiny 64 px images are enlarged with
NEAREST (pixels stay pixels, the labels stay readable), 1024 px SDXL images are halved so a grid of
a few prompts × seeds × checkpoints stays a picture one can open; the images themselves are saved
at full size beside it. Labels use a common Unicode system font when there is one, else PIL's
bundled font (no files needed); a character the font lacks is drawn as its nearest ASCII. Every
label wraps inside its own cell or row-label band, and a margin keeps the last column's label off the
picture's right edge (where viewers put their buttons).
"""

from __future__ import annotations

import functools
import math
import unicodedata

from PIL import Image, ImageDraw, ImageFont

MIN_CELL = 128
MAX_CELL = 512
FONT_SIZE = 14
PAD = 6
GAP = 4
MARGIN = 12
"""Blank border right of the last column and below the last row."""
ROW_LABEL_WIDTH = 220
MAX_LABEL_LINES = 6
BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
MUTED = (100, 100, 100)


FONT_FILES = ("DejaVuSans.ttf", "Arial Unicode.ttf", "Arial.ttf", "Helvetica.ttc")
"""Tried in order (PIL looks in the system's font folders): Linux, macOS, Windows."""
_ASCII = {"×": "x", "→": "->", "—": "-", "–": "-", "…": "..."}


@functools.lru_cache(maxsize=8)
def label_font(size: int = FONT_SIZE) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in FONT_FILES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:  # not installed here: try the next one
            continue
    return ImageFont.load_default(size=size)


@functools.lru_cache(maxsize=4096)
def _has_glyph(font, char: str) -> bool:
    """False when `font` would draw `char` as its missing-glyph box (U+FFFF is never a character)."""
    def shape(c: str) -> tuple:
        mask = font.getmask(c)
        return mask.size, bytes(mask)

    return shape(char) != shape("\uffff")


def drawable(text: str, font) -> str:
    """`text` with each character `font` lacks replaced by its ASCII look-alike ("×" → "x", "é" → "e")."""
    out = []
    for char in text:
        if char.isascii() or _has_glyph(font, char):
            out.append(char)
        else:
            folded = unicodedata.normalize("NFKD", char).encode("ascii", "ignore").decode()
            out.append(_ASCII.get(char) or folded or "?")
    return "".join(out)


def display_size(width: int, height: int) -> tuple[int, int]:
    """A cell's size in grid.png: an integer enlargement up to MIN_CELL, or a reduction to MAX_CELL."""
    longest = max(width, height)
    if longest < MIN_CELL:
        factor = math.ceil(MIN_CELL / longest)
        return width * factor, height * factor
    if longest > MAX_CELL:
        return max(1, round(width * MAX_CELL / longest)), max(1, round(height * MAX_CELL / longest))
    return width, height


def fit_cell(image: Image.Image) -> Image.Image:
    """`image` at its grid.png size."""
    size = display_size(*image.size)
    if size == image.size:
        return image.convert("RGB")
    resample = Image.Resampling.NEAREST if size[0] > image.size[0] else Image.Resampling.LANCZOS
    return image.convert("RGB").resize(size, resample)


def _pieces(word: str, font, width: int) -> list[str]:
    """`word` cut into parts no wider than `width` (a long URL-like word in a prompt)."""
    pieces = []
    while len(word) > 1 and font.getlength(word) > width:
        cut = len(word) - 1
        while cut > 1 and font.getlength(word[:cut]) > width:
            cut -= 1
        pieces.append(word[:cut])
        word = word[cut:]
    return pieces + [word]


def wrap(text: str, font, width: int, max_lines: int = MAX_LABEL_LINES) -> list[str]:
    """Greedy word wrap to `width` pixels; an ellipsis ends a text that needs more than `max_lines`."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        for piece in _pieces(word, font, width):
            candidate = f"{current} {piece}" if current else piece
            if current and font.getlength(candidate) > width:
                lines.append(current)
                current = piece
            else:
                current = candidate
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        ellipsis = drawable("…", font)
        last = lines[max_lines - 1]
        while last and font.getlength(last + ellipsis) > width:
            last = last[:-1]
        lines = lines[: max_lines - 1] + [last.rstrip() + ellipsis]
    return lines


def _line_height(font) -> int:
    left, top, right, bottom = font.getbbox("Ag")
    return bottom - top + 4


def draw_grid(cells: list[list[Image.Image]], column_labels: list[str],
              row_labels: list[tuple[str, str]]) -> Image.Image:
    """One picture of `cells[row][column]` with a header per column and (text, detail) per row,
    e.g. ("a photo of ohwx toy robot", "seed 1")."""
    if not cells or not cells[0]:
        raise ValueError("a grid needs at least one row and one column")
    if len(row_labels) != len(cells) or any(len(row) != len(column_labels) for row in cells):
        raise ValueError(f"{len(cells)} rows × {len(cells[0])} columns of images do not match "
                         f"{len(row_labels)} row labels and {len(column_labels)} column labels")
    shown = [[fit_cell(image) for image in row] for row in cells]
    cell_w = max(image.width for row in shown for image in row)
    cell_h = max(image.height for row in shown for image in row)
    font, small = label_font(), label_font(FONT_SIZE - 2)
    line = _line_height(font)

    headers = [wrap(drawable(label, font), font, cell_w - 2 * PAD, max_lines=3) for label in column_labels]
    header_h = PAD * 2 + line * max(len(lines) for lines in headers)
    row_h = max(cell_h, PAD * 2 + line * (MAX_LABEL_LINES + 1))
    width = ROW_LABEL_WIDTH + len(column_labels) * (cell_w + GAP) - GAP + MARGIN
    height = header_h + len(cells) * (row_h + GAP) - GAP + MARGIN
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)

    for c, lines in enumerate(headers):
        x = ROW_LABEL_WIDTH + c * (cell_w + GAP)
        for i, text in enumerate(lines):
            offset = max(0.0, (cell_w - font.getlength(text)) / 2)
            draw.text((x + offset, PAD + i * line), text, fill=INK, font=font)
    for r, row in enumerate(shown):
        y = header_h + r * (row_h + GAP)
        text, detail = row_labels[r]
        lines = wrap(drawable(text, font), font, ROW_LABEL_WIDTH - 2 * PAD)
        for i, part in enumerate(lines):
            draw.text((PAD, y + PAD + i * line), part, fill=INK, font=font)
        draw.text((PAD, y + PAD + len(lines) * line), drawable(detail, small), fill=MUTED, font=small)
        for c, image in enumerate(row):
            x = ROW_LABEL_WIDTH + c * (cell_w + GAP)
            canvas.paste(image, (x + (cell_w - image.width) // 2, y + (row_h - image.height) // 2))
    return canvas
