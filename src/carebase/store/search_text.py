"""Full-text search (`_text`, `_content`) over a resource's narrative and text content.

Query syntax of one value (values separated by commas are ORed):
- whitespace-separated terms must all appear (AND), in any order;
- `"a quoted phrase"` must appear as consecutive words;
- a term ending in `*` matches words starting with it (`diab*`), also inside a phrase;
- a term that folds to several words (`e-mail`, `o'brien`) is a phrase of them.
Matching is on whole words, ignoring case and accents (words are folded as the index's are,
by `text_index.words`). Everything other than letters, digits, quotes and a trailing `*` only
separates words, so nothing a client writes reaches FTS5's or tsquery's syntax: the query is
rebuilt from quoted words alone and sent as a bound parameter.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from carebase.errors import BadRequest
from carebase.store.index_values import normalize_string
from carebase.store.schema import TEXT_TABLE
from carebase.store.text_index import MAX_WORD_CHARS, WORD_RE

Condition = tuple[str, list[Any]]
#: the text table column each parameter searches
COLUMNS = {"_text": "narrative", "_content": "content"}
#: the most terms (words of phrases counted singly) one value may have
MAX_TERMS = 64

# A quoted phrase (closing quote optional: an unbalanced quote runs to the end) or a bare term.
_PART_RE = re.compile(r'"([^"]*)"?|([^\s"]+)')

#: one word of a clause, and whether it is a prefix
Term = tuple[str, bool]


def _bad(name: str, value: str, why: str) -> BadRequest:
    return BadRequest(f"Search parameter '{name}': value '{value}' {why}", location=name)


def _clause(name: str, value: str, text: str) -> list[Term]:
    """The words of a term or phrase; a piece ending in `*` makes its last word a prefix."""
    terms: list[Term] = []
    for piece in text.split():
        found = WORD_RE.findall(normalize_string(piece))
        if any(len(w) > MAX_WORD_CHARS for w in found):
            raise _bad(name, value, f"has a word longer than {MAX_WORD_CHARS} characters")
        if found:
            terms.extend((w, False) for w in found[:-1])
            terms.append((found[-1], piece.endswith("*")))
    return terms


def parse_value(name: str, value: str) -> list[list[Term]]:
    """The clauses of one value (all must match), each a phrase of one or more terms."""
    clauses: list[list[Term]] = []
    for match in _PART_RE.finditer(value):
        quoted, bare = match.groups()
        clause = _clause(name, value, quoted if quoted is not None else bare)
        if clause:
            clauses.append(clause)
    if not clauses:
        raise _bad(name, value, "has no word to search for (letters or digits)")
    if sum(len(c) for c in clauses) > MAX_TERMS:
        raise _bad(name, value, f"has more than {MAX_TERMS} words")
    return clauses


def fts5_query(column: str, values: list[list[list[Term]]]) -> str:
    """An FTS5 MATCH expression: `column : ((c1 AND c2) OR (...))`, words double-quoted."""
    ors = []
    for clauses in values:
        ands = [" + ".join(f'"{w}"' + (" *" if prefix else "") for w, prefix in c) for c in clauses]
        ors.append("(" + " AND ".join(ands) + ")")
    return f"{column} : (" + " OR ".join(ors) + ")"


def tsquery(values: list[list[list[Term]]]) -> str:
    """A tsquery in its text form: `('a' & 'b' <-> 'c':*) | (...)`, words single-quoted."""
    ors = []
    for clauses in values:
        ands = []
        for clause in clauses:
            phrase = " <-> ".join(f"'{w}'" + (":*" if prefix else "") for w, prefix in clause)
            ands.append(f"({phrase})" if len(clause) > 1 else phrase)
        ors.append("(" + " & ".join(ands) + ")")
    return " | ".join(ors)


def text_condition(
    dialect: Literal["sqlite", "postgresql"], code: str, values: list[str], name: str
) -> Condition:
    """SQL over `resource` (a `rid IN (...)` fragment) matching any of `values` (OR).

    `code` is `_text` (narrative) or `_content` (all text of the resource); `name` is the
    parameter as the client wrote it, for error messages.
    """
    column = COLUMNS[code]
    parsed = [parse_value(name, value) for value in values]
    if not parsed:
        raise _bad(name, "", "is empty")
    if dialect == "sqlite":
        return (
            f"rid IN (SELECT rowid FROM {TEXT_TABLE} WHERE {TEXT_TABLE} MATCH ?)",
            [fts5_query(column, parsed)],
        )
    return (
        f"rid IN (SELECT rid FROM {TEXT_TABLE} WHERE {column} @@ CAST(? AS tsquery))",
        [tsquery(parsed)],
    )
