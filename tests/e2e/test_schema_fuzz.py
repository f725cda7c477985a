"""A bounded schemathesis run over every operation of the API, as CI's fuzzing job (issue 9).

A real uvicorn process on the embedded default, an admin key, and ``st run`` with every check
(5xx, schema conformance of responses, undocumented status codes, Allow headers, negative and
positive data acceptance, ...; the exceptions, with their reasons, are in schemathesis.toml) and
the examples, fuzzing and stateful phases on a fixed seed (the coverage phase on request). The
test fails on any failure and prints the number of cases run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
# CI's budget: the examples, fuzzing and stateful phases (about 1,000 cases, under a minute
# here). The coverage phase adds about 1,500 deterministic cases and two to six minutes: run it
# with PHASES=examples,coverage,fuzzing,stateful (docs/security.md has that run's numbers).
MAX_EXAMPLES = 20
PHASES = os.environ.get("PHASES", "examples,fuzzing,stateful")
SEED = 1
# Every check on, and the few documented exceptions: see the file.
CONFIG = Path(__file__).with_name("schemathesis.toml")


def _env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESNET_")}
    env.update(RESNET_STATE_DIR=str(state), TF_CPP_MIN_LOG_LEVEL="2")
    return env


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(base URL, admin key) of a real API process on a fresh state folder."""
    env = _env(tmp_path / "state")
    py = sys.executable
    subprocess.run([py, "-m", "service.migrate"], env=env, cwd=ROOT, check=True, timeout=120)
    created = subprocess.run(
        [py, "-m", "service.keys", "create", "fuzz", "--scope", "admin"],
        env=env, cwd=ROOT, check=True, timeout=120, capture_output=True, text=True,
    )  # fmt: skip
    key = created.stdout.strip()
    port = free_port()
    log = open(tmp_path / "api.log", "wb")  # noqa: SIM115 - the server writes to it
    proc = subprocess.Popen(
        [py, "-m", "uvicorn", "service.app:create_app", "--factory", "--port", str(port)],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail((tmp_path / "api.log").read_text()[-4000:])
                time.sleep(0.3)
        yield url, key
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.mark.skipif(
    shutil.which("st") is None and not Path(sys.executable).with_name("st").exists(),
    reason="schemathesis not installed",
)
def test_every_operation_survives_a_bounded_schemathesis_run(
    api: tuple[str, str], tmp_path: Path
) -> None:
    url, key = api
    beside = Path(sys.executable).with_name("st")
    st = str(beside) if beside.exists() else str(shutil.which("st"))
    reports = tmp_path / "reports"
    proc = subprocess.run(
        [
            st, "--config-file", str(CONFIG), "run", f"{url}/openapi.json",
            "-H", f"Authorization: Bearer {key}",
            "--phases", PHASES,
            "--max-examples", str(MAX_EXAMPLES),
            "--seed", str(SEED),
            "--no-shrink",
            "--request-timeout", "30",
            "--output-truncate", "false",
            "--report", "ndjson", "--report-dir", str(reports),
        ],
        capture_output=True, text=True, timeout=840,
    )  # fmt: skip
    summary = proc.stdout[proc.stdout.rfind("SUMMARY") :]
    print(summary)  # the case count, in the CI log
    assert "generated" in summary, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, proc.stdout[-20000:]
    events = [json.loads(line) for p in reports.glob("*.ndjson") for line in p.open()]
    assert events, "schemathesis wrote no report"
