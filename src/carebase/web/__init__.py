"""The browser side of carebase: HTML pages (Jinja2), static files, sessions and login."""

from pathlib import Path

#: The files served under `/static/`.
STATIC_DIR = Path(__file__).parent / "static"
