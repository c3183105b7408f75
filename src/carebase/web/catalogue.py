"""Finding the translatable texts of the web pages (for the catalogue check and for
translators): every `_("...")` / `_('...')` in the templates and web modules and every
`N_("...")` marked text."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from carebase.telehealth.ui import panel_texts

WEB_DIR = Path(__file__).parent
_TEMPLATE_CALL = re.compile(r"""\b_\(\s*(?:"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)')""")


def template_texts(directory: Path = WEB_DIR / "templates") -> set[str]:
    """The literal texts passed to `_` in the templates."""
    found: set[str] = set()
    for path in sorted(directory.rglob("*.html")):
        for match in _TEMPLATE_CALL.finditer(path.read_text(encoding="utf-8")):
            found.add(match.group(1) if match.group(1) is not None else match.group(2))
    return found


def module_texts(directory: Path = WEB_DIR) -> set[str]:
    """The literal texts passed to `_`, `N_`, `translate(language, ...)` or `web._` in the
    web modules."""
    found: set[str] = set()
    for path in sorted(directory.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = (
                node.func.attr
                if isinstance(node.func, ast.Attribute)
                else getattr(node.func, "id", None)
            )
            position = {"_": 0, "N_": 0, "Text": 0, "translate": 1}.get(str(name))
            if position is None or len(node.args) <= position:
                continue
            arg = node.args[position]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
    return found


def all_texts() -> set[str]:
    """Every translatable text of the web pages (the telehealth video panel's included: the
    visit pages show it)."""
    return template_texts() | module_texts() | panel_texts()
