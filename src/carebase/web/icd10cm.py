"""ICD-10-CM search for the problem list: by code prefix or by words of the title.

The code titles come from the ICD-10-CM tabular list (public domain, CDC/NCHS) that the
`simple-icd-10-cm` package ships as XML; it is parsed once per process, on first use
(about a second), without importing that package's own module (which parses much more).
A site that loaded ICD-10-CM as a CodeSystem resource gets it from the store instead
(`Terminology.code_system`), so a newer release can be used without a new package.
The tabular list names categories and codes, not the seventh-character extensions
(injuries, obstetrics) generated from them: those are not offered.
"""

from __future__ import annotations

import importlib.util
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

from carebase.errors import Unavailable
from carebase.store.base import Store
from carebase.store.terminology import Terminology

SYSTEM = "http://hl7.org/fhir/sid/icd-10-cm"
_lock = threading.Lock()
_titles: dict[str, str] | None = None


def _tabular_file() -> Path:
    spec = importlib.util.find_spec("simple_icd_10_cm")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable(
            "ICD-10-CM is not installed: install the simple-icd-10-cm package, or load the "
            "ICD-10-CM CodeSystem into the store"
        )
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    found = sorted(data.glob("icd10cm*tabular*.xml")) + sorted(data.glob("icd10*tabular*.xml"))
    if not found:
        raise Unavailable(f"No ICD-10-CM tabular list in {data}")
    return found[-1]


def _parse(path: Path) -> dict[str, str]:
    titles: dict[str, str] = {}
    for _, element in ET.iterparse(path, events=("end",)):
        if element.tag == "diag":
            name, desc = element.findtext("name"), element.findtext("desc")
            if name and desc:
                titles[name.strip()] = desc.strip()
            element.clear()
    return titles


def package_titles() -> dict[str, str]:
    """Code -> title of the packaged tabular list (parsed once)."""
    global _titles
    with _lock:
        if _titles is None:
            _titles = _parse(_tabular_file())
        return _titles


class Icd10Cm:
    """ICD-10-CM codes and titles: the store's CodeSystem when loaded, else the package's."""

    def __init__(self, store: Store) -> None:
        view = Terminology(store).code_system(SYSTEM)
        if view is not None and view.concepts:
            self.titles = {
                c: str(concept.get("display") or c) for c, concept in view.concepts.items()
            }
        else:
            self.titles = package_titles()

    def title(self, code: str) -> str | None:
        """The title of `code` (None when it is not an ICD-10-CM code)."""
        return self.titles.get(code.strip().upper())

    def search(self, query: str, limit: int = 20) -> list[tuple[str, str]]:
        """(code, title) of codes starting with `query`, or whose title has all its words;
        codes first, then shorter (more general) titles."""
        text = query.strip()
        if len(text) < 2:
            return []
        code_like = text.upper()
        by_code = sorted(c for c in self.titles if c.startswith(code_like))
        if by_code:
            return [(c, self.titles[c]) for c in by_code[:limit]]
        words = text.lower().split()
        hits = [(c, t) for c, t in self.titles.items() if all(w in t.lower() for w in words)]
        hits.sort(key=lambda item: (len(item[1]), item[0]))
        return hits[:limit]
