"""The HTML pages as a browser draws them: headless Chromium screenshots the report of a
compare directory and the page of a real release matrix (their charts are matplotlib's SVG).

Skipped where Chromium is not installed (scripts/setup installs it: apt-get install chromium).
The PNG is decoded here with zlib only: size as asked, not blank, the failing marks drawn.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from harness.analysis import matrix
from harness.report import html as report_html
from harness.report import matrix_page
from tests.test_matrix import saved_results

DATA = Path(__file__).parent / "data" / "report"
WIDTH, HEIGHT = 1280, 2000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM_TIMEOUT_S = 120


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(page: Path, png: Path, profile: Path) -> None:
    browser = chromium()
    assert browser is not None
    argv = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--screenshot={png}",
        f"--window-size={WIDTH},{HEIGHT}",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]


def png_rows(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """Width, height, bytes per pixel and the unfiltered rows of an 8-bit RGB/RGBA PNG."""
    assert data[:8] == PNG_MAGIC
    pos, idat = 8, b""
    width = height = bpp = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color_type = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color_type in (2, 6), (depth, color_type)
            bpp = 3 if color_type == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:  # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:  # Up
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 0xFF
        elif kind == 3:  # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + (left + prev[i]) // 2) & 0xFF
        elif kind == 4:  # Paeth
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def pixel_counts(rows: list[bytes], bpp: int) -> tuple[int, int]:
    """(non-white pixels, strongly red pixels: the failing-verdict marks)."""
    non_white = red = 0
    for row in rows:
        r, g, b = row[0::bpp], row[1::bpp], row[2::bpp]
        for pr, pg, pb in zip(r, g, b, strict=True):
            if pr < 235 or pg < 235 or pb < 235:
                non_white += 1
                if pr > 180 and pg < 80 and pb < 80:
                    red += 1
    return non_white, red


def test_png_decoder_on_a_known_image() -> None:
    """The decoder itself: a 2x2 RGB image, one red pixel, rows filtered Sub and Up."""
    raw = b"\x01" + bytes([255, 0, 0, 0, 255, 255]) + b"\x02" + bytes([0, 255, 255, 0, 0, 0])

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    png = (
        PNG_MAGIC
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    width, height, bpp, rows = png_rows(png)
    assert (width, height, bpp) == (2, 2, 3)
    assert rows == [bytes([255, 0, 0, 255, 255, 255]), bytes([255, 255, 255, 255, 255, 255])]
    assert pixel_counts(rows, bpp) == (1, 1)


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (apt-get install chromium)")
def test_screenshot_of_compare_report_is_drawn(tmp_path: Path) -> None:
    page = report_html.write_html(DATA / "compare", tmp_path / "report.html")
    png = tmp_path / "report.png"
    screenshot(page, png, tmp_path / "profile")
    assert png.exists() and png.stat().st_size > 10_000
    width, height, bpp, rows = png_rows(png.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    non_white, red = pixel_counts(rows, bpp)
    total = width * height
    assert non_white > total * 0.03, f"page looks blank: {non_white} of {total} pixels drawn"
    assert non_white < total * 0.6, "page is mostly dark: styles broken?"
    assert red > 200, "the failing iterations (red verdict marks) are not drawn"


@pytest.mark.skipif(chromium() is None, reason="chromium not installed (apt-get install chromium)")
def test_screenshot_of_matrix_page_is_drawn(tmp_path: Path) -> None:
    matrix_page.write(saved_results(), tmp_path)
    png = tmp_path / "matrix.png"
    screenshot(tmp_path / matrix.MATRIX_HTML, png, tmp_path / "profile")
    width, height, bpp, rows = png_rows(png.read_bytes())
    assert (width, height) == (WIDTH, HEIGHT)
    non_white, red = pixel_counts(rows[:700], bpp)  # the chart is at the top
    assert non_white > width * 700 * 0.1, "the chart is not drawn"
    assert red > 5000, "the unfixed bars (red) of the four fixed releases are not drawn"
