"""HTML (boilerplate dropped) and Markdown: headings, paragraphs, list items, table rows."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from appliance.corpus.parsed import BlockKind, ParsedDocument, TextAssembly
from appliance.corpus.parsers.source import Source
from appliance.errors import EmptyDocument

if TYPE_CHECKING:
    from bs4 import BeautifulSoup, Tag

# Navigation, scripts and widgets carry no document text.
_DROPPED = (
    "script", "style", "noscript", "template", "nav", "iframe", "svg", "canvas", "button",
    "select", "object", "embed", "map", "head",
)  # fmt: skip
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})
_BLOCKS = frozenset(
    {
        "p", "li", "dt", "dd", "blockquote", "figcaption", "caption", "address", "summary",
        "legend", "div", "section", "article", "main", "aside", "header", "footer", "body",
        "html", "ul", "ol", "dl", "table", "thead", "tbody", "tfoot", "form", "fieldset",
        "figure", "details", "hr", "center", "td", "th",
    }
) | _HEADINGS  # fmt: skip
_SPACE = re.compile(r"[ \t\r\f\v\u00a0\u200b]+")
_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:-]+)", re.I)
_TAG = re.compile(r"<[^>]*>")
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")


def parse_html(source: Source, text: str, media_type: str) -> ParsedDocument:
    """Blocks of an HTML page, without scripts, styles, navigation and page chrome.

    Raises:
        EmptyDocument: the page holds no visible text.
    """
    return html_document(source, _redecode(source.data, text), media_type)


def html_document(source: Source, markup: str, media_type: str) -> ParsedDocument:
    """Parse HTML already decoded (an email body, say)."""
    from bs4 import BeautifulSoup

    # Beautiful Soup warns (an error under strict warning filters) about markup without tags
    # that looks like a file name, and about XHTML's XML declaration; neither matters here.
    markup = _XML_DECLARATION.sub("", markup, count=1)
    if "<" not in markup:
        markup = f"<p>{markup}</p>"
    soup = BeautifulSoup(markup, "lxml")
    metadata = _html_metadata(soup)
    _drop_boilerplate(soup)
    walk = _HtmlWalk()
    walk.run(soup)
    if not walk.assembly.blocks:
        raise EmptyDocument(f"{source.name}: the HTML page has no visible text")
    return walk.assembly.build(media_type, metadata)


def _redecode(data: bytes, text: str) -> str:
    """Honour a declared charset when the bytes are not UTF-8 (the sniffer guessed)."""
    try:
        data.decode("utf-8")
        return text
    except UnicodeDecodeError:
        pass
    match = _CHARSET.search(data[:4096])
    if match:
        try:
            return data.decode(codecs.lookup(match.group(1).decode("ascii")).name, "replace")
        except LookupError:
            pass
    return text


def _html_metadata(soup: BeautifulSoup) -> dict[str, str]:
    metadata: dict[str, str] = {}
    if soup.title and soup.title.string and soup.title.string.strip():
        metadata["title"] = " ".join(soup.title.string.split())
    for name in ("author", "description", "keywords"):
        tag = soup.find("meta", attrs={"name": name})
        content = tag.get("content") if tag is not None else None
        if isinstance(content, str) and content.strip():
            metadata[name] = " ".join(content.split())
    html = soup.find("html")
    lang = html.get("lang") if html is not None else None
    if isinstance(lang, str) and lang.strip():
        metadata["language"] = lang.strip()
    return metadata


def _drop_boilerplate(soup: BeautifulSoup) -> None:
    for tag in soup.find_all(_DROPPED):
        tag.decompose()
    for tag in soup.select('[hidden], [aria-hidden="true"], [role="navigation"]'):
        tag.decompose()
    # Page-level banners and footers are site chrome; inside an article they are content.
    for tag in soup.find_all(["header", "footer"]):
        if tag.find_parent(["article", "main", "section"]) is None:
            tag.decompose()


@dataclass
class _HtmlWalk:
    """Depth-first walk without recursion (deeply nested markup must not overflow the stack)."""

    assembly: TextAssembly = field(default_factory=TextAssembly)
    buffer: list[str] = field(default_factory=list)
    tables: int = 0
    rows: int = 0

    def run(self, root: Any) -> None:
        from bs4.element import NavigableString, PreformattedString, Tag

        stack: list[tuple[Any, bool]] = [(root, False)]
        while stack:
            node, closing = stack.pop()
            if closing:
                self.flush("heading" if node.name in _HEADINGS else "paragraph")
            elif isinstance(node, PreformattedString) or not isinstance(
                node, NavigableString | Tag
            ):
                continue
            elif isinstance(node, NavigableString):
                self.buffer.append(_SPACE.sub(" ", str(node)).replace("\n", " "))
            elif node.name == "br":
                self.buffer.append("\n")
            elif node.name == "pre":
                self.flush("paragraph")
                self._add("paragraph", node.get_text())
            elif node.name == "tr":
                self.flush("paragraph")
                self._row(node)
            else:
                if node.name in _BLOCKS:
                    self.flush("paragraph")
                    stack.append((node, True))
                if node.name == "table":
                    self.tables, self.rows = self.tables + 1, 0
                stack.extend((child, False) for child in reversed(node.contents))
        self.flush("paragraph")

    def flush(self, kind: BlockKind) -> None:
        text = "\n".join(" ".join(line.split()) for line in "".join(self.buffer).split("\n"))
        self.buffer.clear()
        self._add(kind, text)

    def _row(self, row: Tag) -> None:
        cells = [
            " ".join(cell.get_text(" ").split())
            for cell in row.find_all(["td", "th"], recursive=False)
        ]
        self.rows += 1
        if any(cells):
            where = f"table {max(self.tables, 1)}, row {self.rows}"
            self.assembly.add("table_row", " | ".join(cells), where)

    def _add(self, kind: BlockKind, text: str) -> None:
        where = f"paragraph {len(self.assembly.blocks) + 1}"
        self.assembly.add(kind, text.strip("\n"), where)


def parse_markdown(source: Source, text: str, media_type: str) -> ParsedDocument:
    """Markdown by its syntax tree: headings, paragraphs, list items, code, table rows.

    Raises:
        EmptyDocument: the file holds no text.
    """
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
    assembly = TextAssembly()
    kind: BlockKind = "paragraph"
    row: list[str] | None = None
    row_lines = ""
    for token in parser.parse(text):
        where = _lines(token.map)
        if token.type == "heading_open":
            kind = "heading"
        elif token.type == "heading_close":
            kind = "paragraph"
        elif token.type == "tr_open":
            row, row_lines = [], where
        elif token.type == "tr_close" and row is not None:
            assembly.add("table_row", " | ".join(row), row_lines or "table")
            row = None
        elif token.type == "inline" and row is not None:
            row.append(_inline_text(token))
        elif token.type == "inline":
            assembly.add(kind, _inline_text(token), where)
        elif token.type in ("fence", "code_block"):
            assembly.add("paragraph", token.content, where)
        elif token.type == "html_block":
            assembly.add("paragraph", " ".join(_TAG.sub(" ", token.content).split()), where)
    if not assembly.blocks:
        raise EmptyDocument(f"{source.name}: the Markdown file holds no text")
    return assembly.build(media_type)


def _lines(span: list[int] | None) -> str:
    if not span:
        return ""
    first, last = span[0] + 1, span[1]
    return f"line {first}" if last <= first else f"lines {first}-{last}"


def _inline_text(token: Any) -> str:
    """Inline Markdown as plain text: emphasis and link markup dropped, their text kept."""
    parts: list[str] = []
    for child in token.children or ():
        if child.type in ("text", "code_inline"):
            parts.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            parts.append("\n")
        elif child.type == "image":
            parts.append(child.content)
    return "".join(parts)
