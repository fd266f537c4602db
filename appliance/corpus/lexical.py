"""The lexical side of search: safe FTS5 queries and the BM25 statement over the index."""

from __future__ import annotations

import re

_WORD = re.compile(r"\w+", re.UNICODE)

# Words that occur in nearly every English chunk: they add almost nothing to BM25 (their
# IDF is near zero) but make FTS5 score every row. Dropped unless the query is only these.
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "but",
        "by",
        "can",
        "do",
        "does",
        "did",
        "for",
        "from",
        "had",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "our",
        "so",
        "such",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


def fts_query(text: str) -> str | None:
    """A safe FTS5 query: the words of ``text``, each quoted, any of them may match."""
    words = {w.lower() for w in _WORD.findall(text)}
    words = (words - _STOPWORDS) or words
    return " OR ".join(f'"{w}"' for w in sorted(words)) or None


def bm25_sql(acl_where: str) -> str:
    """The BM25 query over the FTS index alone, ACL-filtered, best first.

    The FTS index holds exactly the live chunks, each with its document id, so neither the
    chunks table nor the embeddings are read per match: a query that matches 50k chunks
    would otherwise decrypt tens of thousands of pages just to filter and sort.
    """
    return (
        "SELECT rowid, -bm25(chunks_fts) FROM chunks_fts "
        f"WHERE chunks_fts MATCH ? AND {acl_where} ORDER BY bm25(chunks_fts) LIMIT ?"
    )
