"""The installed ``resnet`` command (``jobs.cli``) is the library's app plus the service's commands.

The library's own app (``core.cli.app``, ``python -m core.cli``) stays as it was: building the
installed one must not change it.
"""

import subprocess
import sys

from typer.testing import CliRunner

import core.cli
from jobs import cli


def command_names(app):
    return [c.name or c.callback.__name__ for c in app.registered_commands]


def test_the_installed_command_adds_serve_and_predict_through_a_server():
    assert command_names(cli.app) == [
        "archs",
        "train",
        "evaluate",
        "rescore",
        "export",
        "predict",
        "serve",
    ]
    result = CliRunner().invoke(cli.app, ["predict", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--server" in result.stdout and "RESNET_API_KEY" in result.stdout


def test_the_library_app_is_left_as_it_was():
    assert command_names(core.cli.app) == [
        "archs",
        "train",
        "evaluate",
        "rescore",
        "export",
        "predict",
    ]
    assert core.cli.app is not cli.app
    result = CliRunner().invoke(core.cli.app, ["predict", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "--server" not in result.stdout


def test_server_needs_a_model_name():
    result = CliRunner().invoke(cli.app, ["predict", "--server", "http://127.0.0.1:9", "x.png"])
    assert result.exit_code == 2 and "--server needs --model NAME" in result.stderr


def test_python_dash_m_core_cli_runs_the_library_app():
    proc = subprocess.run(
        [sys.executable, "-m", "core.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "archs" in proc.stdout and "Run the HTTP service" not in proc.stdout
