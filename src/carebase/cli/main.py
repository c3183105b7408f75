"""The `carebase` command: one Typer app, each command group in its own module."""

from __future__ import annotations

import typer

from carebase.cli import (
    audit,
    clients,
    demo,
    encryption,
    generate,
    import_,
    keys,
    migrate,
    ml,
    reindex,
    serve,
    token,
    users,
    view,
)

app = typer.Typer(
    name="carebase",
    help="carebase: an open-source health record platform on HL7 FHIR R4.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
serve.register(app)
migrate.register(app)
reindex.register(app)
import_.register(app)
clients.register(app)
users.register(app)
token.register(app)
keys.register(app)
encryption.register(app)
audit.register(app)
generate.register(app)
demo.register(app)
view.register(app)
ml.register(app)


def main() -> None:
    """Entry point of the console script."""
    app()
