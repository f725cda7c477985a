"""Screenshots of the dashboard showing the real CIFAR-10 depth study (issue 10), for docs/.

    python scripts/screenshot_study.py [--out docs/screenshots]

The study's records, as ``scripts/collect_depth_study.sh`` collected them from the service's API
(``docs/results/depth_study_part*.json``, one experiment per session), are written
back into a fresh, migrated SQLite database the way the service stored them (same ids, statuses,
times, metrics and epoch rows). The API then serves that database under uvicorn in this process,
and Playwright drives Debian's Chromium headless (``/usr/bin/chromium``; no browser download)
through the dashboard: the runs list, plain-56's run page, the experiments list and each
experiment's report. Every number on the pictures comes from ``/v1`` over those records.

Not shown: the models page and evaluations, because the study promoted no model (its model files
were never committed) and recorded no separate evaluation; the test metrics are the worker's
summary on each run.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from jobs.records import (
    EpochMetric,
    Run,
    RunStatus,
    make_engine,
    make_sessionmaker,
    session_scope,
    upgrade_to_head,
)
from jobs.records import repository as records
from jobs.records.models import Experiment, ExperimentKind
from jobs.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
STUDY = sorted((ROOT / "docs" / "results").glob("depth_study_part*.json"))
# plain-56, session 2: the study's headline (49.29 % test error), with its ten epochs' curves.
RUN_SHOWN = "1f8ba28deffd4f658142da9b7202fc5d"

# The same browser and launch arguments as tests/e2e/test_dashboard_browser.py.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
TIMEOUT_MS = 60_000
FIGURES = 6  # the experiment page draws six figures (dashboard.js FIGURES), or says why not

_RUN_TIMES = ("created_at", "started_at", "finished_at", "heartbeat_at")
# Run columns the API returns as they are stored. Not among them: the owner (the admin key made
# here), out_dir (not in the API, so not collected) and dataset_id (the sessions' dataset rows
# were not collected; the run's own ``dataset`` spec is what the pages show).
_RUN_FIELDS = (
    "architecture",
    "dataset",
    "status",
    "cancel_requested",
    "config",
    "attempts",
    "max_attempts",
    "worker_host",
    "error",
    "progress",
    "epochs_planned",
    "epochs_completed",
    "metrics",
)
# What Experiment.cells stores for each run; the API adds status, accuracy, ... when it reads.
_CELL_FIELDS = ("run_id", "architecture", "seed", "params")


def _when(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def restore_collection(session: Session, collected: dict[str, Any], owner: str) -> Experiment:
    """Write one collected experiment, its runs and their epochs into ``session``, as stored.

    Args:
        session: A session on a database at head.
        collected: ``collect_depth_study.sh``'s JSON: ``experiment``, ``runs`` {id: {run,
            epochs}}.
        owner: The API key id recorded as the maker of the experiment and its runs (the owner
            columns of migration 0006; the original keys stayed in their sessions' databases).
    """
    spec = collected["experiment"]
    experiment = Experiment(
        id=spec["id"],
        name=spec["name"],
        kind=ExperimentKind(spec["kind"]),
        spec=spec["spec"],
        cells=[{k: cell[k] for k in _CELL_FIELDS} for cell in spec["cells"]],
        api_key_id=owner,
        created_at=_when(spec["created_at"]),
        cancelled_at=_when(spec["cancelled_at"]),
    )
    session.add(experiment)
    for run_id, record in collected["runs"].items():
        fields = record["run"]
        run = Run(
            id=run_id,
            api_key_id=owner,
            experiment_id=experiment.id,
            **{k: fields[k] for k in _RUN_FIELDS if k != "status"},
            status=RunStatus(fields["status"]),
            **{k: _when(fields[k]) for k in _RUN_TIMES},
        )
        run.epochs = [
            EpochMetric(**{**row, "recorded_at": _when(row["recorded_at"])})
            for row in record["epochs"]
        ]
        session.add(run)
    session.flush()
    return experiment


def restore_study(database_url: str, files: Sequence[Path]) -> tuple[str, list[str]]:
    """A database at head holding the collected experiments; its admin key's secret and the
    experiment ids, in the order of ``files``."""
    upgrade_to_head(database_url)
    engine = make_engine(database_url)
    try:
        with session_scope(make_sessionmaker(engine)) as session:
            key, secret = records.create_api_key(session, "screenshots", ["admin"])
            experiment_ids = [
                restore_collection(session, json.loads(path.read_text()), key.id).id
                for path in files
            ]
    finally:
        engine.dispose()
    return secret, experiment_ids


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(settings: Settings) -> Iterator[str]:
    """The API for ``settings`` under uvicorn in a thread of this process; yields its URL."""
    import uvicorn

    from service.app import create_app

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            timeout_graceful_shutdown=2,
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _wait_for_figures(page: Any) -> None:
    # Each figure is an image that has loaded, or a note saying why it cannot be drawn (a 422).
    page.wait_for_function(
        f"(fs => fs.length === {FIGURES} && fs.every(f => f.dataset.missing === 'true' ||"
        " [...f.querySelectorAll('img')].some(i => i.complete && i.naturalWidth > 0)))"
        "([...document.querySelectorAll('#figures figure')])"
    )


def take_screenshots(
    url: str, key: str, out: Path, experiment_ids: Sequence[str], runs: int
) -> list[Path]:
    """Log in with ``key`` and screenshot the dashboard's pages into ``out``, each once its
    tables and figures have loaded (the runs list once it shows all ``runs``).

    Raises:
        RuntimeError: A page logged an error other than a figure's 422 (no data for it).
    """
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # bypass_csp: wait_for_function evaluates strings, which the dashboard's CSP refuses.
        # UTC and one locale: the pages' times read the same whoever regenerates them.
        context = browser.new_context(
            viewport={"width": 1280, "height": 900},
            bypass_csp=True,
            timezone_id="UTC",
            locale="en-GB",
        )
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        def shoot(name: str, down_to: str | None = None) -> None:
            """The whole page, or (``down_to``) the top of it down to that element: a short
            list need not come with a screen of empty page below it."""
            path = out / name
            if down_to is None:
                page.screenshot(path=str(path), full_page=True)
            else:
                box = page.locator(down_to).bounding_box()
                if box is None:
                    raise RuntimeError(f"{down_to} is not on the page")
                bottom = box["y"] + box["height"] + 24
                page.screenshot(
                    path=str(path), clip={"x": 0, "y": 0, "width": 1280, "height": bottom}
                )
            written.append(path)

        page.goto(url + "/dashboard/login")
        page.fill("#api-key", key)
        page.click("#login-form button[type=submit]")
        page.wait_for_url("**/dashboard/runs")

        page.wait_for_function(
            f"document.querySelectorAll('#runs-table tbody tr').length === {runs}"
        )
        shoot("runs.png", down_to="#app > .actions")  # the pager, under the table

        page.goto(f"{url}/dashboard/runs/{RUN_SHOWN}")
        page.wait_for_function("document.querySelector('#live-charts')?.dataset.epochs === '10'")
        page.wait_for_selector("#metrics .stat")
        page.wait_for_selector("#evaluations p")  # "None yet." once the evaluations have loaded
        shoot("run.png")

        page.goto(url + "/dashboard/experiments")
        page.wait_for_function(
            "document.querySelectorAll('#experiments-table tbody tr').length"
            f" === {len(experiment_ids)}"
        )
        shoot("experiments.png", down_to="#experiments-table")

        for n, experiment_id in enumerate(experiment_ids, 1):
            page.goto(f"{url}/dashboard/experiments/{experiment_id}")
            page.wait_for_selector("#report-table tbody tr")
            page.wait_for_selector("#aggregate tbody tr")
            _wait_for_figures(page)
            shoot("experiment.png" if n == 1 else f"experiment_session{n}.png")
        context.close()
        browser.close()
    unexpected = [e for e in errors if "422" not in e]
    if unexpected:
        raise RuntimeError(f"the dashboard logged errors: {unexpected}")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="study-state-") as folder:
        state = Path(folder)
        database_url = f"sqlite:///{state / 'resnet.db'}"
        secret, experiment_ids = restore_study(database_url, STUDY)
        runs = sum(len(json.loads(path.read_text())["runs"]) for path in STUDY)
        settings = Settings(state_dir=state, database_url=database_url, data_root=state)
        with served(settings) as url:
            for path in take_screenshots(url, secret, args.out, experiment_ids, runs):
                print(path)


if __name__ == "__main__":
    main()
