"""``python -m core.cli``: the library's command line, without the service's commands."""

from core.cli import app

app()
