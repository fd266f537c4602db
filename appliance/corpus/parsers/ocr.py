"""Optical character recognition with the Tesseract command-line tool, and image documents.

Tesseract runs as a subprocess fed through stdin and stdout: no temporary files, a timeout,
and ``OMP_THREAD_LIMIT=1``, because its OpenMP threads made a page about 4x slower on a
shared 2-core machine (3.6 s against 14.8 s for one 300 dpi page).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from appliance.corpus.parsed import ParsedDocument, ParseLimits, TextAssembly
from appliance.corpus.parsers.source import Source
from appliance.errors import DocumentTooLarge, EmptyDocument

if TYPE_CHECKING:
    from PIL.Image import Image

OCR_DPI = 300
PAGE_TIMEOUT_S = 180.0
# Beyond this many pixels a page is scaled down before OCR: a 300 dpi A3 scan is ~17 MP.
MAX_OCR_PIXELS = 40_000_000
_LANGUAGES = re.compile(r"^[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*$")


class OcrFailed(Exception):
    """Tesseract ran but failed on one page; the caller turns it into a warning."""


@dataclass(frozen=True, slots=True)
class Tesseract:
    """A Tesseract installation able to read the requested languages."""

    binary: str
    languages: str

    def read(self, image: Image) -> str:
        """Recognise the text of one page image.

        Raises:
            OcrFailed: Tesseract exited with an error or ran past its timeout.
        """
        image = _fit(image)
        buffer = io.BytesIO()
        # PNM is read by Leptonica without decompression: the cheapest way through a pipe.
        image.save(buffer, format="PPM")
        env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
        command = [self.binary, "stdin", "stdout", "-l", self.languages, "--dpi", str(OCR_DPI)]
        try:
            done = subprocess.run(
                command,
                input=buffer.getvalue(),
                capture_output=True,
                timeout=PAGE_TIMEOUT_S,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise OcrFailed(f"OCR ran past {PAGE_TIMEOUT_S:g} s") from None
        except OSError as exc:
            raise OcrFailed(f"Tesseract could not run ({type(exc).__name__})") from None
        if done.returncode != 0:
            raise OcrFailed(f"Tesseract exited with status {done.returncode}")
        return done.stdout.decode("utf-8", errors="replace")


def find_tesseract(limits: ParseLimits) -> Tesseract | str:
    """The Tesseract to use under ``limits``, or the reason OCR is not possible."""
    if not limits.ocr:
        return "OCR is off (ParseLimits.ocr=False)"
    if not _LANGUAGES.match(limits.ocr_languages):
        return f"OCR languages {limits.ocr_languages!r} are not valid Tesseract codes"
    binary = shutil.which("tesseract")
    if binary is None:
        return "Tesseract is not installed"
    try:
        listed = subprocess.run(
            [binary, "--list-langs"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return "Tesseract does not run"
    installed = set(listed.stdout.decode("utf-8", "replace").split())
    missing = [code for code in limits.ocr_languages.split("+") if code not in installed]
    if missing:
        return f"Tesseract lacks language data for {', '.join(missing)}"
    return Tesseract(binary, limits.ocr_languages)


def ocr_paragraphs(text: str) -> list[str]:
    """Tesseract separates paragraphs with blank lines."""
    return [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()]


def _fit(image: Image) -> Image:
    from PIL import Image as PilImage

    if image.mode not in ("L", "RGB"):
        image = image.convert("L")
    pixels = image.width * image.height
    if pixels <= MAX_OCR_PIXELS:
        return image
    scale = (MAX_OCR_PIXELS / pixels) ** 0.5
    size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
    return image.resize(size, PilImage.Resampling.LANCZOS)


def parse_image(source: Source, media_type: str) -> ParsedDocument:
    """OCR a scanned page image (PNG, JPEG, TIFF with one page per frame, BMP, GIF).

    Raises:
        CorruptDocument: the image cannot be decoded.
        DocumentTooLarge: more pixels than Pillow allows, or more frames than max_pages.
        EmptyDocument: OCR found no text at all.
    """
    from PIL import ImageSequence

    assembly = TextAssembly()
    with _image_errors(source):
        image = _open_image(source)
        tesseract = find_tesseract(source.limits)
        if isinstance(tesseract, str):
            assembly.warn(f"image without a text layer, not read: {tesseract}")
            return assembly.build(media_type, status="needs_ocr")
        failed = [
            number
            for number, frame in enumerate(ImageSequence.Iterator(image), start=1)
            if not _read_frame(assembly, tesseract, frame.copy(), number)
        ]
    if failed:
        return assembly.build(media_type, status="needs_ocr")
    if not assembly.blocks:
        raise EmptyDocument(f"{source.name}: OCR found no text in the image")
    return assembly.build(media_type)


def _open_image(source: Source) -> Image:
    from PIL import Image as PilImage

    image = PilImage.open(io.BytesIO(source.data))
    image.load()  # decode now: a truncated file fails here, OCR or not
    frames = getattr(image, "n_frames", 1)
    if frames > source.limits.max_pages:
        raise DocumentTooLarge(
            f"{source.name}: {frames} image frames, over max_pages={source.limits.max_pages}"
        )
    return image


@contextmanager
def _image_errors(source: Source) -> Iterator[None]:
    """Pillow's exceptions as document errors."""
    from PIL import Image as PilImage
    from PIL import UnidentifiedImageError

    try:
        yield
    except PilImage.DecompressionBombError:
        raise DocumentTooLarge(
            f"{source.name}: the image has more pixels than Pillow's decompression-bomb limit "
            f"({2 * (PilImage.MAX_IMAGE_PIXELS or 0):,})"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise source.corrupt("is a truncated or corrupt image", exc) from None


def _read_frame(assembly: TextAssembly, tesseract: Tesseract, frame: Image, number: int) -> bool:
    """OCR one frame into blocks; False (and a warning) when Tesseract failed."""
    try:
        text = tesseract.read(frame)
    except OcrFailed as exc:
        assembly.warn(f"page {number}: image, OCR failed: {exc}")
        return False
    for paragraph in ocr_paragraphs(text):
        assembly.add("paragraph", paragraph, f"page {number}", number)
    assembly.warn(f"page {number}: image, OCR applied")
    return True
