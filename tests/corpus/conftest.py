"""Fixtures for the parser tests: real sample documents from sdists, and shared checks."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.corpus.parsed import ParsedDocument, ParseLimits
from appliance.corpus.parsers import parse
from appliance.errors import DocumentError

# Pinned: the assertions below name files and phrases of these exact releases.
OCRMYPDF = ("ocrmypdf", "17.13.0")
PYTHON_DOCX = ("python-docx", "1.2.0")
XLRD = ("xlrd", "1.2.0")


@pytest.fixture(scope="session")
def ocrmypdf_resources(sample_sdist: Callable[[str, str], Path]) -> Path:
    """OCRmyPDF's tests/resources: real scans (linn.pdf with its gold text linn.txt)."""
    return sample_sdist(*OCRMYPDF) / "tests" / "resources"


@pytest.fixture(scope="session")
def docx_files(sample_sdist: Callable[[str, str], Path]) -> Path:
    """python-docx's tests/test_files."""
    return sample_sdist(*PYTHON_DOCX) / "tests" / "test_files"


@pytest.fixture(scope="session")
def xlrd_samples(sample_sdist: Callable[[str, str], Path]) -> Path:
    """xlrd 1.2.0's tests/: real .xls and .xlsx workbooks."""
    return sample_sdist(*XLRD) / "tests"


@pytest.fixture
def tesseract() -> str:
    """The tesseract binary; OCR tests skip, saying why, where it is missing."""
    binary = shutil.which("tesseract")
    if binary is None:
        reason = "tesseract is not installed (apt install tesseract-ocr): OCR test not run"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    return binary


def _check_well_formed(document: ParsedDocument) -> ParsedDocument:
    assert document.blocks, "a parsed document without blocks must be needs_ocr"
    position = 0
    for number, block in enumerate(document.blocks):
        gap = document.text[position : block.start]
        assert gap == ("" if number == 0 else gap) and gap in ("", "\n", "\n\n"), (block, gap)
        assert number == 0 or gap, "blocks are separated"
        assert block.start < block.end
        body = document.text[block.start : block.end]
        assert body == body.strip() and body
        assert block.location
        position = block.end
    assert position == len(document.text)
    return document


@pytest.fixture
def well_formed() -> Callable[[ParsedDocument], ParsedDocument]:
    """Checks the block invariants every parser keeps: ordered, separated, exact offsets."""
    return _check_well_formed


Rejects = Callable[..., DocumentError]


@pytest.fixture
def rejects(tmp_path: Path) -> Rejects:
    """Parse an upload that must fail; check the exact error and that nothing was touched.

    The upload is kept in a file as a user's would be: after the failure it is intact and
    nothing else appeared next to it.
    """

    def check(
        data: bytes,
        filename: str,
        error: type[DocumentError],
        fragment: str,
        limits: ParseLimits | None = None,
    ) -> DocumentError:
        upload = tmp_path / "upload"
        upload.write_bytes(data)
        with pytest.raises(DocumentError) as caught:
            parse(upload.read_bytes(), filename=filename, limits=limits or ParseLimits())
        exc = caught.value
        assert type(exc) is error, f"{type(exc).__name__}: {exc.detail}"
        assert fragment in exc.detail
        assert "\n" not in exc.detail and "Traceback" not in exc.detail
        assert exc.__cause__ is None or isinstance(exc.__cause__, DocumentError)
        assert upload.read_bytes() == data
        assert [path.name for path in tmp_path.iterdir()] == ["upload"]
        return exc

    return check
