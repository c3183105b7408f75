"""A parser for the FHIRPath subset of SQL on FHIR v2, producing the tree of fhirpath_ast."""

from __future__ import annotations

import re
from functools import lru_cache

from carebase.analytics.fhirpath_ast import (
    BINARY_OPERATORS,
    FUNCTIONS,
    TYPE_ARGUMENT_FUNCTIONS,
    Binary,
    Expr,
    FunctionCall,
    Index,
    Literal,
    Member,
    This,
    TypeSpecifier,
    TypeTest,
    Unary,
    Variable,
)
from carebase.analytics.view_errors import FhirPathSyntaxError

_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<datetime>@T[0-9:.]+|@[0-9]{4}(?:-[0-9]{2}(?:-[0-9]{2})?)?
        (?:T(?:[0-9]{2}(?::[0-9]{2}(?::[0-9]{2}(?:\.[0-9]+)?)?)?)?(?:Z|[+-][0-9]{2}:[0-9]{2})?)?)
  | (?P<number>[0-9]+(?:\.[0-9]+)?)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<delimited>`(?:[^`\\]|\\.)*`)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<var>%(?:[A-Za-z_][A-Za-z0-9_]*|`(?:[^`\\]|\\.)*`|'(?:[^'\\]|\\.)*'))
  | (?P<special>\$(?:this|index|total))
  | (?P<op><=|>=|!=|!~|[-+*/&|=~<>().,\[\]{}])
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r"}
_ESCAPES["t"] = "\t"
_WORD_OPERATORS = frozenset({"and", "or", "xor", "implies", "in", "contains", "div", "mod"})
# precedence levels, loosest first; `is`/`as` sit between `|` and `+` in FHIRPath
_LEVELS: tuple[tuple[str, ...], ...] = (*BINARY_OPERATORS[:7], ("is", "as"), *BINARY_OPERATORS[7:])
_TYPE_LEVEL = _LEVELS.index(("is", "as"))


def _unescape(body: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt == "u" and i + 5 < len(body):
                out.append(chr(int(body[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


class _Parser:
    """Recursive descent over a token list; `pos` indexes tokens, errors report characters."""

    def __init__(self, text: str, location: str) -> None:
        self.text = text
        self.location = location
        self.tokens: list[tuple[str, str, int]] = []  # (kind, text, char offset)
        pos = 0
        while pos < len(text):
            match = _TOKEN_RE.match(text, pos)
            if match is None:
                raise self.error(pos, f"unexpected character {text[pos]!r}")
            kind = match.lastgroup or ""
            if kind != "ws":
                self.tokens.append((kind, match.group(), pos))
            pos = match.end()
        self.tokens.append(("end", "", len(text)))
        self.pos = 0

    def error(self, offset: int, problem: str) -> FhirPathSyntaxError:
        return FhirPathSyntaxError(self.text, offset, problem, self.location)

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.pos]

    def take(self) -> tuple[str, str, int]:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, symbol: str) -> None:
        kind, text, offset = self.take()
        if text != symbol or kind not in ("op", "ident"):
            found = repr(text) if kind != "end" else "the end"
            raise self.error(offset, f"expected {symbol!r}, found {found}")

    def parse(self) -> Expr:
        if self.peek()[0] == "end":
            raise self.error(0, "the expression is empty")
        expr = self.binary(0)
        kind, text, offset = self.peek()
        if kind != "end":
            raise self.error(offset, f"unexpected {text!r} after a complete expression")
        return expr

    def _operator_at(self, level: int) -> str | None:
        kind, text, _ = self.peek()
        if kind in ("op", "ident") and text in _LEVELS[level]:
            return text
        return None

    def binary(self, level: int) -> Expr:
        if level == len(_LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while (op := self._operator_at(level)) is not None:
            self.take()
            if level == _TYPE_LEVEL:
                left = TypeTest(op, left, self.type_specifier())
            else:
                left = Binary(op, left, self.binary(level + 1))
        return left

    def unary(self) -> Expr:
        kind, text, _ = self.peek()
        if kind == "op" and text in ("-", "+"):
            self.take()
            return Unary(text, self.unary())
        return self.postfix()

    def postfix(self) -> Expr:
        expr = self.term()
        while True:
            kind, text, _ = self.peek()
            if kind == "op" and text == ".":
                self.take()
                expr = self.invocation(expr)
            elif kind == "op" and text == "[":
                self.take()
                index = self.binary(0)
                self.expect("]")
                expr = Index(expr, index)
            else:
                return expr

    def identifier(self) -> tuple[str, int]:
        kind, text, offset = self.take()
        if kind == "ident":
            return text, offset
        if kind == "delimited":
            return _unescape(text[1:-1]), offset
        found = repr(text) if kind != "end" else "the end"
        raise self.error(offset, f"expected a name, found {found}")

    def invocation(self, base: Expr) -> Expr:
        name, offset = self.identifier()
        if self.peek()[1] == "(" and self.peek()[0] == "op":
            return self.function(base, name, offset)
        return Member(base, name)

    def function(self, base: Expr, name: str, offset: int) -> Expr:
        if name not in FUNCTIONS:
            raise self.error(offset, f"unknown or unsupported function {name}()")
        self.expect("(")
        args: list[Expr] = []
        if self.peek()[1] != ")":
            while True:
                if name in TYPE_ARGUMENT_FUNCTIONS:
                    args.append(self.type_specifier())
                else:
                    args.append(self.binary(0))
                if self.peek()[1] != ",":
                    break
                self.take()
        self.expect(")")
        low, high = FUNCTIONS[name]
        if not low <= len(args) <= high:
            wanted = str(low) if low == high else f"{low} to {high}"
            raise self.error(offset, f"{name}() takes {wanted} argument(s), got {len(args)}")
        return FunctionCall(base, name, tuple(args))

    def type_specifier(self) -> TypeSpecifier:
        name, _ = self.identifier()
        if self.peek()[1] == "." and self.peek()[0] == "op":
            self.take()
            qualified, _ = self.identifier()
            return TypeSpecifier(qualified, name)
        return TypeSpecifier(name)

    def term(self) -> Expr:
        kind, text, offset = self.peek()
        if kind == "number":
            self.take()
            return Literal(text, "decimal") if "." in text else Literal(int(text), "integer")
        if kind == "string":
            self.take()
            return Literal(_unescape(text[1:-1]), "string")
        if kind == "datetime":
            self.take()
            if text.startswith("@T"):
                return Literal(text[2:], "time")
            kind_name = "dateTime" if "T" in text else "date"
            return Literal(text[1:], kind_name)
        if kind == "var":
            self.take()
            body = text[1:]
            name = _unescape(body[1:-1]) if body[0] in "`'" else body
            return Variable(name)
        if kind == "special":
            self.take()
            if text == "$this":
                return This()
            raise self.error(offset, f"{text} is not supported in SQL on FHIR views")
        if kind == "ident" and text in ("true", "false"):
            self.take()
            return Literal(text == "true", "boolean")
        if kind == "op" and text == "(":
            self.take()
            inner = self.binary(0)
            self.expect(")")
            return inner
        if kind == "op" and text == "{":
            self.take()
            self.expect("}")
            return Literal(None, "empty")
        if kind == "ident" and text in _WORD_OPERATORS:
            raise self.error(offset, f"operator {text!r} needs an expression on its left")
        if kind in ("ident", "delimited"):
            return self.invocation(This())
        found = repr(text) if kind != "end" else "the end of the expression"
        raise self.error(offset, f"expected a value or a path, found {found}")


@lru_cache(maxsize=4096)
def _parse_cached(text: str) -> Expr:
    return _Parser(text, "").parse()


def parse_fhirpath(text: str, location: str = "") -> Expr:
    """The syntax tree of `text`; FhirPathSyntaxError (naming `location`, the expression and the
    character position) when it does not parse. Results are cached: trees are immutable."""
    try:
        return _parse_cached(text)
    except FhirPathSyntaxError as exc:
        if not location:
            raise
        raise FhirPathSyntaxError(text, exc.position, _problem(exc), location) from None


def _problem(exc: FhirPathSyntaxError) -> str:
    # the message is "<where>: cannot parse FHIRPath '<text>' at position N: <problem>"
    return str(exc).split(f"at position {exc.position}: ", 1)[1]
