"""Core is the ResNet library and nothing else: it trains, evaluates and predicts with the
service's frameworks (SQLAlchemy, Celery, FastAPI, httpx, Alembic) and our other packages
unimportable."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

BLOCKED = ("sqlalchemy", "celery", "fastapi", "starlette", "httpx", "alembic", "uvicorn",
           "jobs", "service", "worker")  # fmt: skip

SCRIPT = textwrap.dedent(
    """
    import json, sys

    BLOCKED = {blocked!r}

    class Refuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is not importable in this test")
            return None

    sys.meta_path.insert(0, Refuse())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]

    from typer.testing import CliRunner
    from core.cli import app

    runner = CliRunner()
    out, data = sys.argv[1], "synthetic:96:16x16x3:3"
    steps = {{
        "train": ["train", "resnet8", "--data", data, "--out", out, "--epochs", "1",
                  "--batch-size", "32", "--precision", "float32"],
        "evaluate": ["evaluate", out, "--data", data, "--split", "train", "--json"],
        "predict": ["predict", out, sys.argv[2], "--json", "--top-k", "2"],
    }}
    report = {{}}
    for step, args in steps.items():
        result = runner.invoke(app, args)
        report[step] = {{"exit": result.exit_code, "stdout": result.stdout,
                        "error": repr(result.exception)}}
    report["loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    print("REPORT" + json.dumps(report))
    """
)


@pytest.mark.slow
def test_core_trains_evaluates_and_predicts_without_the_service_stack(tmp_path):
    image = tmp_path / "x.png"
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(image)
    code = SCRIPT.format(blocked=BLOCKED)
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "run"), str(image)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.split("REPORT", 1)[1])
    for step in ("train", "evaluate", "predict"):
        assert report[step]["exit"] == 0, (step, report[step])
    assert report["loaded"] == []
    assert "accuracy" in json.loads(report["evaluate"]["stdout"])
    predictions = json.loads(report["predict"]["stdout"])
    assert len(predictions[0]["predictions"]) == 2
    assert (tmp_path / "run" / "model.keras").is_file()
