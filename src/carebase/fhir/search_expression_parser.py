"""A parser for the small FHIRPath subset used by R4 SearchParameter expressions.

It turns text such as `(Observation.value as Quantity) | Observation.component.value` into a
tree of tuples that `search_expression` compiles to closures. Anything outside the subset
raises `UnsupportedExpression`, and the caller falls back to fhirpathpy.

Tree nodes (plain tuples, cheap to build and to match on):

    ("name", ident)                 an identifier at the start of a path (or of a where/arg)
    ("child", node, ident)          node.ident
    ("call", node | None, fn, args) node.fn(args...) - node None for a bare call like resolve()
    ("index", node, n)              node[n]
    ("as", node, type) / ("is", node, type)
    ("union", left, right) / ("and", left, right)
    ("eq", left, right) / ("ne", left, right)
    ("str", text) / ("num", number) / ("bool", value) / ("var", name)  literals, %vars
"""

from __future__ import annotations

import re
from typing import Any

Node = tuple[Any, ...]


class UnsupportedExpression(ValueError):
    """The expression uses FHIRPath outside the natively compiled subset."""


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^'\\]|\\.)*')
      | (?P<num>\d+(?:\.\d+)?)
      | (?P<var>%[A-Za-z_][A-Za-z0-9_]*)
      | (?P<ident>[A-Za-z_][A-Za-z0-9_]*|`[^`]+`)
      | (?P<op>!=|[.()|=,\[\]])
    )""",
    re.VERBOSE,
)


def tokenize(text: str) -> list[tuple[str, str]]:
    """Split an expression into (kind, text) tokens; unknown characters are unsupported."""
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise UnsupportedExpression(f"cannot read {text[pos:]!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    """Recursive descent over the precedence levels the subset needs.

    Lowest to highest: `and`; `=`/`!=`; `|`; `is`/`as`; `.`/`[]` (FHIRPath's own order).
    """

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, text: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (text is not None and tok[1] != text):
            raise UnsupportedExpression(f"expected {text or 'more'} at token {self.pos}")
        self.pos += 1
        return tok

    def at(self, text: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[1] == text and tok[0] in ("op", "ident")

    def parse(self) -> Node:
        node = self.and_expr()
        if self.peek() is not None:
            raise UnsupportedExpression(f"unexpected {self.peek()}")
        return node

    def and_expr(self) -> Node:
        node = self.equality()
        while self.at("and"):
            self.take()
            node = ("and", node, self.equality())
        return node

    def equality(self) -> Node:
        node = self.union()
        while self.at("=") or self.at("!="):
            op = self.take()[1]
            node = ("eq" if op == "=" else "ne", node, self.union())
        return node

    def union(self) -> Node:
        node = self.type_expr()
        while self.at("|"):
            self.take()
            node = ("union", node, self.type_expr())
        return node

    def type_expr(self) -> Node:
        node = self.postfix()
        while self.at("as") or self.at("is"):
            op = self.take()[1]
            node = (op, node, self.type_name())
        return node

    def type_name(self) -> str:
        kind, text = self.take()
        if kind != "ident":
            raise UnsupportedExpression(f"type name expected, got {text!r}")
        if self.at(".") and text in ("FHIR", "System"):
            self.take()
            text = self.take()[1]
        return text.strip("`")

    def postfix(self) -> Node:
        node = self.term()
        while True:
            if self.at("."):
                self.take()
                kind, name = self.take()
                if kind != "ident":
                    raise UnsupportedExpression(f"name expected after '.', got {name!r}")
                name = name.strip("`")
                if self.at("("):
                    node = ("call", node, name, self.args())
                else:
                    node = ("child", node, name)
            elif self.at("["):
                self.take()
                kind, num = self.take()
                if kind != "num" or "." in num:
                    raise UnsupportedExpression("only integer indexes are supported")
                self.take("]")
                node = ("index", node, int(num))
            else:
                return node

    def args(self) -> list[Node]:
        self.take("(")
        out: list[Node] = []
        if self.at(")"):
            self.take()
            return out
        while True:
            if self.peek() is not None and self.peek()[0] == "ident" and self._type_arg():  # type: ignore[index]
                out.append(("type", self.type_name()))
            else:
                out.append(self.and_expr())
            if self.at(")"):
                self.take()
                return out
            self.take(",")

    def _type_arg(self) -> bool:
        # as(X)/ofType(X)/is(X) take a type name, which otherwise reads like a path
        prev = self.tokens[self.pos - 2][1] if self.pos >= 2 else ""
        return prev in ("as", "ofType", "is")

    def term(self) -> Node:
        kind, text = self.take()
        if kind == "op" and text == "(":
            node = self.and_expr()
            self.take(")")
            return node
        if kind == "str":
            return ("str", re.sub(r"\\(.)", r"\1", text[1:-1]))
        if kind == "num":
            return ("num", float(text) if "." in text else int(text))
        if kind == "var":
            return ("var", text[1:])
        if kind == "ident":
            if text in ("true", "false"):
                return ("bool", text == "true")
            if self.at("("):
                return ("call", None, text, self.args())
            return ("name", text.strip("`"))
        raise UnsupportedExpression(f"unexpected {text!r}")


def parse(text: str) -> Node:
    """Parse a SearchParameter expression into a tuple tree (see the module docstring)."""
    return _Parser(tokenize(text)).parse()
