"""The dashboard in a real browser: Playwright driving Debian's Chromium, headless.

The API runs under uvicorn in this process on a migrated SQLite file. The test logs in with a
key, filters the runs list, watches a running run's curves grow while it writes epoch rows into
the database (as a worker would) until the run ends, opens an experiment's report and figures,
predicts an uploaded image with a real (tiny) trained model promoted to a named model, and
downloads an evaluation's stored predictions from the run page.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``) and the ``playwright`` Python
package; no browser is downloaded. Either missing: the test is skipped and says which.
Screenshots of the main pages go to a temporary folder only: they show the records this test
invents. The screenshots in ``docs/screenshots/`` are of the real depth study's records
(``scripts/screenshot_study.py``).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from jobs.records import make_engine, make_sessionmaker, session_scope, upgrade_to_head  # noqa: E402
from jobs.records import repository as records  # noqa: E402
from jobs.settings import Settings  # noqa: E402
from tests.core.reports.factory import record_run  # noqa: E402
from tests.fixtures.servers import free_port  # noqa: E402

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
TIMEOUT_MS = 30_000
CONFUSION = [[40, 2, 1], [3, 35, 5], [0, 4, 50]]
RUN_CONFIG = {"architecture": "resnet20", "data": "cifar10", "epochs": 4, "batch_size": 128}


@dataclass
class Served:
    url: str
    settings: Settings
    db: sessionmaker[Session]
    key: str


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed: pip install playwright")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    import uvicorn

    from service.app import create_app

    state = tmp_path_factory.mktemp("dashboard-state")
    url = f"sqlite:///{state / 'resnet.db'}"
    upgrade_to_head(url)
    settings = Settings(state_dir=state, database_url=url, data_root=state)
    engine = make_engine(url)
    db = make_sessionmaker(engine)
    with session_scope(db) as session:
        _, secret = records.create_api_key(session, "browser", ["admin"])
    port = free_port()
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
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield Served(f"http://127.0.0.1:{port}", settings, db, secret)
    server.should_exit = True
    thread.join(timeout=10)
    engine.dispose()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def page(browser: Any, served: Served) -> Iterator[Any]:
    # bypass_csp: Playwright's wait_for_function evaluates strings, which the dashboard's CSP
    # (no eval) refuses; the CSP itself is checked in tests/service/test_reports_dashboard.py.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield page
    context.close()
    # expected: the 401 of a wrong key at login, a 422 for a figure without data; nothing else
    unexpected = [e for e in errors if not ("401" in e or "422" in e)]
    assert not unexpected, unexpected


def log_in(page: Any, served: Served, path: str = "/dashboard/runs") -> None:
    page.goto(served.url + path)
    page.wait_for_url("**/dashboard/login?next=**")
    page.fill("#api-key", served.key)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(f"**{path}")


def epoch_row(n: int, loss: float, accuracy: float) -> dict[str, float | int]:
    return {
        "epoch": n,
        "loss": loss,
        "accuracy": accuracy,
        "val_loss": loss + 0.1,
        "val_accuracy": accuracy - 0.03,
        "learning_rate": 0.1,
        "seconds": 2.0,
        "images_per_second": 900.0,
    }


def test_log_in_and_filter_the_runs(page: Any, served: Served, shots: Path) -> None:
    with session_scope(served.db) as session:
        record_run(session, "resnet20", accuracy=0.9125, epoch_seconds=300.0, confusion=CONFUSION)
        record_run(session, "plain20", accuracy=0.9001, epoch_seconds=280.0, confusion=CONFUSION)
        waiting = records.create_run(session, architecture="resnet56", dataset="cifar10", config={})
        waiting_id = waiting.id
    page.goto(served.url + "/dashboard/login")
    page.fill("#api-key", "rsk_wrong")
    page.click("#login-form button[type=submit]")
    page.wait_for_function("document.querySelector('#login-error')?.textContent.length > 0")
    assert "not valid" in page.inner_text("#login-error")
    log_in(page, served)
    page.wait_for_selector("#runs-table tbody tr")
    assert page.locator("#runs-table tbody tr").count() >= 3
    page.select_option("#filter-status", "queued")
    page.wait_for_function(
        "(rows => rows.length > 0 && rows.every(r => r.textContent.includes('queued')))"
        "([...document.querySelectorAll('#runs-table tbody tr')])"
    )
    assert waiting_id in page.locator("#runs-table tbody tr").first.get_attribute("data-id")
    assert "status=queued" in page.url
    page.select_option("#filter-status", "")
    page.wait_for_function("document.querySelectorAll('#runs-table tbody tr').length >= 3")
    page.screenshot(path=str(shots / "runs.png"), full_page=True)


def test_a_running_runs_curves_grow_live(page: Any, served: Served, shots: Path) -> None:
    with session_scope(served.db) as session:
        twin = records.create_run(
            session, architecture="resnet20", dataset="cifar10", config={**RUN_CONFIG, "seed": 1}
        )
        records.claim_run(session, twin.id, worker_host="gpu-1")
        for n, (loss, acc) in enumerate([(1.6, 0.45), (1.1, 0.62), (0.8, 0.72), (0.6, 0.8)], 1):
            records.record_epoch(session, twin.id, epoch_row(n, loss, acc))
        records.finish_run(session, twin.id, status="succeeded", metrics={"accuracy": 0.8})
        run = records.create_run(
            session, architecture="resnet20", dataset="cifar10", config={**RUN_CONFIG, "seed": 2}
        )
        records.claim_run(session, run.id, worker_host="gpu-2")
        records.record_epoch(session, run.id, epoch_row(1, 1.62, 0.46))
        records.update_progress(
            session,
            run.id,
            {"epoch": 2, "epochs": 4, "batch": 10, "batches": 40, "fraction": 0.25,
             "eta_seconds": 95.0, "images_per_second": 910.0},
        )  # fmt: skip
        run_id = run.id
    log_in(page, served, f"/dashboard/runs/{run_id}")
    charts = page.locator("#live-charts")
    page.wait_for_function("document.querySelector('#live-charts')?.dataset.epochs === '1'")
    assert page.inner_text("#stat-eta") == "1 min 35 s"
    train_loss = charts.locator("svg[data-chart=Loss] g[data-series=train]")
    assert train_loss.get_attribute("data-points") == "1"

    # the worker finishes epochs 2 and 3 while the page listens; epoch 3 falls behind the twin
    for n, (loss, acc) in [(2, (1.12, 0.61)), (3, (1.5, 0.5))]:
        time.sleep(0.5)
        with session_scope(served.db) as session:
            records.record_epoch(session, run_id, epoch_row(n, loss, acc))
            records.update_progress(
                session, run_id, {"epoch": n + 1, "epochs": 4, "fraction": 0.0, "eta_seconds": 30.0}
            )
        page.wait_for_function(f"document.querySelector('#live-charts')?.dataset.epochs === '{n}'")
        assert train_loss.get_attribute("data-points") == str(n)
    page.wait_for_selector("#behind-flag")
    assert "behind the curve" in page.inner_text("#behind-flag")
    assert page.locator("#epochs tbody tr").count() == 3
    page.screenshot(path=str(shots / "run.png"), full_page=True)

    with session_scope(served.db) as session:
        records.record_epoch(session, run_id, epoch_row(4, 0.9, 0.7))
        records.finish_run(
            session, run_id, status="succeeded", metrics={"accuracy": 0.7, "f1_macro": 0.69}
        )
    page.wait_for_function("document.querySelector('#run-status')?.textContent === 'succeeded'")
    page.wait_for_function("document.querySelector('#live-charts')?.dataset.epochs === '4'")
    page.wait_for_selector("#metrics .stat")
    assert "70.00 %" in page.inner_text("#metrics")


def test_an_experiment_report_with_figures(page: Any, served: Served, shots: Path) -> None:
    with session_scope(served.db) as session:
        experiment = records.create_experiment(
            session, name="CIFAR-10 depth study", kind="grid", spec={"plain_twins": True}
        )
        for arch, acc, secs in [
            ("resnet20", 0.9125, 300.0),
            ("plain20", 0.9001, 280.0),
            ("resnet56", 0.9310, 800.0),
            ("plain56", 0.8790, 760.0),
        ]:
            for seed, jitter in enumerate((0.0, 0.004)):
                run = record_run(
                    session, arch, accuracy=acc + jitter, epoch_seconds=secs, seed=seed,
                    confusion=CONFUSION,
                )  # fmt: skip
                records.attach_to_experiment(
                    session,
                    experiment,
                    run,
                    cell={"architecture": arch, "seed": seed, "params": {}},
                )
        experiment_id = experiment.id
    log_in(page, served, "/dashboard/experiments")
    page.wait_for_selector("#experiments-table tbody tr")
    page.click("#experiments-table a")
    page.wait_for_url(f"**/dashboard/experiments/{experiment_id}")
    page.wait_for_selector("#report-table tbody tr")
    assert page.locator("#report-table tbody tr").count() == 8
    report = page.inner_text("#report-table")
    assert "Paper's error (%)" in report and "8.75" in report and "6.97" in report
    assert "91.25" in report
    # the seed study's own Table 1 beside ours and He et al.'s (ResNet-20: 0.8478 → 84.78), flagged
    assert "Study's accuracy (%)" in report and "84.78" in report
    assert "accuracy + error ≠ 1" in report
    assert page.locator("#aggregate tbody tr").count() == 4
    assert "± " in page.inner_text("#aggregate")
    page.wait_for_function(
        "(imgs => imgs.length >= 6 && imgs.every(i => i.complete && i.naturalWidth > 0))"
        "([...document.querySelectorAll('#figures img')])"
    )
    kinds = page.eval_on_selector_all("#figures figure", "fs => fs.map(f => f.dataset.figure)")
    assert set(kinds) == {
        "curves",
        "plain_vs_residual",
        "error_vs_depth",
        "training_time_vs_depth",
        "confusion",
        "throughput",
    }
    page.screenshot(path=str(shots / "experiment.png"), full_page=True)


def test_an_adaptive_search_shows_each_trials_rung_and_why_it_stopped(
    page: Any, served: Served, shots: Path
) -> None:
    from jobs.records import trials

    rule = {"rule": "asha", "metric": "val_accuracy", "max_concurrent": 3, "rungs": [1],
            "reduction_factor": 2, "grace_period": 1}  # fmt: skip
    with session_scope(served.db) as session:
        experiment = records.create_experiment(
            session, name="ASHA search", kind="random", spec={"early_stopping": rule}
        )
        ids = []
        for lr in (0.1, 0.01, 0.03):
            run = records.create_run(
                session, architecture="resnet20", dataset="cifar10", config=RUN_CONFIG
            )
            records.attach_to_experiment(
                session,
                experiment,
                run,
                cell={"architecture": "resnet20", "seed": 0, "params": {"schedule.base_lr": lr}},
            )
            ids.append(run.id)
        experiment_id = experiment.id
    # The workers' part: each trial reaches the rung; the first goes on, the others stop.
    for run_id, value in zip(ids, (0.9, 0.5, 0.7), strict=True):
        with session_scope(served.db) as session:
            records.claim_run(session, run_id, worker_host="w")
            records.record_epoch(session, run_id, {"epoch": 1, "val_accuracy": value})
            trials.report_epoch(session, run_id, epoch=1, values={"val_accuracy": value})
    with session_scope(served.db) as session:
        records.finish_run(session, ids[0], status="succeeded", metrics={"accuracy": 0.9})
        for run_id in ids[1:]:
            reason = trials.stop_reason(session, run_id)
            records.finish_run(session, run_id, status="cancelled", error=reason)
    log_in(page, served, f"/dashboard/experiments/{experiment_id}")
    page.wait_for_selector("#cells-table tbody tr")
    header = page.inner_text("#app h1 + p")
    assert "ASHA by val_accuracy, rungs at epochs 1, η 2, 3 at once" in header
    rows = [page.inner_text(f"#cells-table tbody tr:nth-child({i})") for i in (1, 2, 3)]
    assert "0 (promoted)" in rows[0] and "stopped early" not in rows[0]
    for row in rows[1:]:
        assert "0 (stopped)" in row and "stopped early" in row
        assert "below the cut" in row
    page.screenshot(path=str(shots / "experiment_asha.png"), full_page=True)


def test_predict_an_uploaded_image(
    page: Any, served: Served, shots: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from PIL import Image

    try:
        from core.training import make_config, train
    except ImportError as exc:  # pragma: no cover - the core always has it
        pytest.skip(f"cannot train the model to predict with: {exc}")
    out = tmp_path_factory.mktemp("model") / "run"
    config = make_config(
        "resnet8", "synthetic:96:32x32x3:3", epochs=1, batch_size=32, precision="float32",
        tensorboard=False, validation=0.25,
    )  # fmt: skip
    train(config, out)
    with session_scope(served.db) as session:
        run = records.create_run(
            session, architecture="resnet8", dataset="synthetic:96:32x32x3:3", config={"epochs": 1}
        )
        records.claim_run(session, run.id, worker_host="test")
        records.finish_run(session, run.id, status="succeeded", metrics={"accuracy": 0.5})
        model = str(out / "model.keras")
        records.add_artifact(session, run.id, kind="model", uri=model, path=model)
        records.promote_run(session, run.id, "tiny-synthetic")
    image = tmp_path_factory.mktemp("upload") / "sample.png"
    Image.new("RGB", (32, 32), (200, 40, 90)).save(image)

    log_in(page, served, "/dashboard/models")
    page.wait_for_selector("#models-table tbody tr")
    assert "tiny-synthetic" in page.inner_text("#models-table")
    page.select_option("#predict-model", "tiny-synthetic")
    page.set_input_files("#predict-file", str(image))
    page.fill("#predict-top-k", "3")
    page.click("#predict-form button[type=submit]")
    page.wait_for_selector("#predict-result .prediction table.labels tbody tr")
    rows = page.locator("#predict-result table.labels tbody tr")
    assert rows.count() == 3
    probabilities = [float(rows.nth(i).locator("td").nth(1).inner_text()) for i in range(3)]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0.0 < sum(probabilities) <= 1.0 + 1e-3
    assert "sample.png" in page.inner_text("#predict-result")
    page.screenshot(path=str(shots / "models.png"), full_page=True)

    # A batch prediction of a registered dataset, queued from the same page.
    for c, colour in enumerate([(250, 0, 0), (0, 250, 0), (0, 0, 250)]):
        folder = served.settings.data_dir / "shapes" / f"c{c}"
        folder.mkdir(parents=True)
        Image.new("RGB", (32, 32), colour).save(folder / "a.png")
    registered = httpx.post(
        f"{served.url}/v1/datasets",
        json={"name": "shapes", "kind": "folder", "path": "shapes"},
        headers={"Authorization": f"Bearer {served.key}"},
    )
    assert registered.status_code == 201, registered.text
    page.reload()
    page.wait_for_selector("#batch-dataset option[value=shapes]", state="attached")
    page.select_option("#batch-model", "tiny-synthetic")
    page.select_option("#batch-dataset", "shapes")
    page.select_option("#batch-split", "train")
    page.click("#batch-form button[type=submit]")
    page.wait_for_selector("#batch-run")
    assert page.get_attribute("#batch-run", "href") == f"/dashboard/runs/{run.id}"
    with session_scope(served.db) as session:
        (job,) = records.list_evaluations(session, run.id)
        assert (job.split, job.status.value) == ("train", "queued")
        assert job.dataset is not None and job.dataset.endswith("shapes")


def test_a_runs_evaluations_and_their_predictions(
    page: Any, served: Served, shots: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import numpy as np

    from core.evaluation import Predictions

    names = ["cat", "dog", "ship"]
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=12)
    kept = Predictions.from_outputs(
        probs, rng.integers(0, 3, 12), names, multi_label=False,
        ids=[f"pets/{i:02d}.png" for i in range(12)],
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("predictions")
    with session_scope(served.db) as session:
        run = records.create_run(
            session, architecture="resnet20", dataset="cifar10", config={**RUN_CONFIG, "seed": 7}
        )
        records.claim_run(session, run.id, worker_host="gpu-3")
        records.finish_run(session, run.id, status="succeeded", metrics={"accuracy": 0.5})
        evaluation = records.create_evaluation(session, run_id=run.id, split="test")
        records.claim_evaluation(session, evaluation.id, worker_host="gpu-3")
        uri = str(folder / f"{evaluation.id}.npz")
        kept.save(uri)
        records.finish_evaluation(
            session, evaluation.id, status="succeeded", metrics=kept.score(),
            predictions_uri=uri, predictions_count=len(kept),
        )  # fmt: skip
        records.create_evaluation(session, run_id=run.id, split="val")  # still queued
        run_id, evaluation_id = run.id, evaluation.id

    log_in(page, served, f"/dashboard/runs/{run_id}")
    page.wait_for_selector("#evaluations-table tbody tr")
    rows = page.locator("#evaluations-table tbody tr")
    assert rows.count() == 2
    finished = page.locator(f"#evaluations-table tbody tr[data-id='{evaluation_id}']")
    assert f"{100 * kept.score()['accuracy']:.2f}" in finished.inner_text()
    with page.expect_download() as download:
        finished.locator("button[data-format=csv]").click()
    assert download.value.suggested_filename == f"predictions-{evaluation_id}.csv"
    lines = Path(download.value.path()).read_text().splitlines()
    assert len(lines) == 13 and lines[1].split(",")[1] == "pets/00.png"
    queued = rows.filter(has_text="queued")
    assert queued.count() == 1 and queued.locator("button").count() == 0
    page.locator("#evaluations").screenshot(path=str(shots / "evaluations.png"))


def test_predict_an_unlabelled_folder_from_the_models_page(
    page: Any, served: Served, tmp_path_factory: pytest.TempPathFactory
) -> None:
    import numpy as np
    from PIL import Image

    from core.evaluation import Predictions

    inbox = served.settings.data_dir / "inbox"
    inbox.mkdir(parents=True)
    for i, colour in enumerate([(250, 0, 0), (0, 250, 0)]):
        Image.new("RGB", (32, 32), colour).save(inbox / f"{i}.png")
    (inbox / "notes.txt").write_text("not a picture")
    registered = httpx.post(
        f"{served.url}/v1/datasets",
        json={"name": "inbox", "kind": "images", "path": "inbox"},
        headers={"Authorization": f"Bearer {served.key}"},
    )
    assert registered.status_code == 201, registered.text
    folder = tmp_path_factory.mktemp("unlabelled-model")
    with session_scope(served.db) as session:
        run = records.create_run(
            session, architecture="resnet8", dataset="folder:shapes", config={"epochs": 1}
        )
        records.claim_run(session, run.id, worker_host="test")
        records.finish_run(session, run.id, status="succeeded", metrics={"accuracy": 0.5})
        model = str(folder / "model.keras")  # never loaded here: the worker's part is played below
        records.add_artifact(session, run.id, kind="model", uri=model, path=model)
        records.promote_run(session, run.id, "unlabelled-demo")
        run_id = run.id

    log_in(page, served, "/dashboard/models")
    page.wait_for_selector("#batch-dataset option[value=inbox]", state="attached")
    assert "unlabelled images" in page.inner_text("#batch-dataset option[value=inbox]")
    page.select_option("#batch-model", "unlabelled-demo")
    page.select_option("#batch-dataset", "inbox")
    assert page.is_disabled("#batch-split")  # unlabelled images have no splits
    page.click("#batch-form button[type=submit]")
    page.wait_for_selector("#batch-run")
    assert "every file of the folder" in page.inner_text("#batch-result")
    with session_scope(served.db) as session:
        (job,) = records.list_evaluations(session, run_id)
        assert (job.split, job.dataset, job.status.value) == ("all", "images:inbox", "queued")
        # The worker's part: every file a row, the text file reported.
        kept = Predictions.unlabelled(
            np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]]), ["red", "green"], multi_label=False,
            ids=["0.png", "1.png", "notes.txt"], errors=["", "", "not an image file"],
        )  # fmt: skip
        uri = str(folder / f"{job.id}.npz")
        kept.save(uri)
        records.claim_evaluation(session, job.id, worker_host="test")
        records.finish_evaluation(
            session, job.id, status="succeeded", predictions_uri=uri, predictions_count=3
        )
    page.wait_for_selector("#batch-predictions-table tbody tr")
    rows = page.locator("#batch-predictions-table tbody tr")
    assert rows.count() == 3
    assert [rows.nth(i).locator("td").nth(0).inner_text() for i in range(3)] == kept.ids
    assert rows.nth(0).locator("td").nth(1).inner_text() == "red"
    assert rows.nth(1).locator("td").nth(1).inner_text() == "green"
    assert rows.nth(2).locator("td").nth(3).inner_text() == "not an image file"
    assert "3 files, 1 unreadable" in page.inner_text("#batch-status")
    with page.expect_download() as download:
        page.locator("#batch-result button[data-format=csv]").click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert lines[0].startswith("index,id,predicted,score,error") and len(lines) == 4
