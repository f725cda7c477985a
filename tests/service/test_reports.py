"""/v1/reports and /v1/figures over runs recorded in the test's own migrated SQLite database."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from core.reports.figures import FIGURES
from jobs.records import repository as records
from jobs.records import session_scope
from tests.core.reports.factory import check_png, check_svg, record_run

CONFUSION = [[40, 2, 1], [3, 35, 5], [0, 4, 50]]


@pytest.fixture
def study(db: sessionmaker[Session]) -> dict[str, str]:
    """resnet20/56 and their plain twins on CIFAR-10, trained, evaluated, recorded."""
    ids = {}
    with session_scope(db) as session:
        for arch, acc, secs in [
            ("resnet20", 0.9125, 300.0),
            ("plain20", 0.9000, 280.0),
            ("resnet56", 0.9310, 800.0),
            ("plain56", 0.8800, 760.0),
        ]:
            ids[arch] = record_run(
                session, arch, accuracy=acc, epoch_seconds=secs, confusion=CONFUSION
            ).id
    return ids


def get(client: TestClient, headers: dict[str, str], url: str) -> object:
    response = client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    return response


def test_table1_over_recorded_runs_json_csv_markdown(
    client: TestClient, make_key: Callable[..., dict[str, str]], study: dict[str, str]
) -> None:
    reader = make_key("read")
    order = [study["resnet56"], study["plain20"], study["resnet20"]]
    runs = ",".join(order)
    data = client.get(f"/v1/reports/table1?runs={runs}", headers=reader).json()
    assert [r["run_id"] for r in data["rows"]] == order
    r56, p20, r20 = data["rows"]
    assert r56["model"] == "resnet56"
    assert r56["accuracy"] == pytest.approx(93.10)
    assert r56["precision"] == pytest.approx(92.10)
    assert r56["recall"] == pytest.approx(91.10)
    assert r56["f1"] == pytest.approx(90.10)
    assert r56["error"] == pytest.approx(6.90)
    assert r56["paper_error"] == 6.97
    assert r56["training_time"] == pytest.approx(1600.0)
    assert r20["paper_error"] == 8.75 and r20["error"] == pytest.approx(8.75)
    assert p20["paper_error"] is None
    assert data["references"][0]["source"].startswith("He, Zhang, Ren, Sun")

    response = client.get(f"/v1/reports/table1?runs={runs}&format=csv", headers=reader)
    assert response.headers["content-type"].startswith("text/csv")
    assert "table1.csv" in response.headers["content-disposition"]
    parsed = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["model"] for r in parsed] == ["resnet56", "plain20", "resnet20"]
    assert [r["paper_error"] for r in parsed] == ["6.97", "", "8.75"]

    response = client.get(f"/v1/reports/table1?runs={runs}&format=md", headers=reader)
    assert response.headers["content-type"].startswith("text/markdown")
    md = response.text
    assert "| Model | Run | Accuracy (%) |" in md and "Paper's error (%)" in md
    row = f"| resnet56 | {study['resnet56'][:8]} | 93.10 | 92.10 | 91.10 | 90.10 | 6.90 | 6.97 |"
    assert f"{row} 0:26:40 |" in md
    # repeated parameters work as well as a comma-separated list
    repeated = "&".join(f"runs={i}" for i in order)
    assert client.get(f"/v1/reports/table1?{repeated}", headers=reader).json() == data


def test_table3_with_imagenet_and_coco(
    client: TestClient, make_key: Callable[..., dict[str, str]], db: sessionmaker[Session]
) -> None:
    with session_scope(db) as session:
        imagenet = record_run(
            session, "resnet101", accuracy=0.77, epoch_seconds=3600.0, dataset="imagenet:ilsvrc"
        )
        coco = record_run(
            session, "resnet101", accuracy=0.40, epoch_seconds=1800.0, dataset="coco:coco2014"
        )
        ids = f"{imagenet.id},{coco.id}"
    data = client.get(f"/v1/reports/table3?runs={ids}", headers=make_key("read")).json()
    first, second = data["rows"]
    assert first["reference"] == "top-1/top-5 error (%) 21.75/6.05"
    assert second["reference_value"] == 77.3 and "ML-GCN" in second["reference_source"]
    assert any("object detection" in n for n in data["notes"])
    for key in ("accuracy", "precision", "recall", "f1", "training_time"):
        assert first[key] is not None
    md = client.get(f"/v1/reports/table3?runs={ids}&format=md", headers=make_key("read")).text
    assert "Published reference" in md and "77.30" in md
    # the seed study's Table 3 rows beside ours, its training times on its hardware as printed
    assert (first["training_time"], first["study_training_time"]) == (
        pytest.approx(7200.0),
        249120.0,
    )
    assert first["study_accuracy"] == 67.59 and first["study_flags"] == []
    assert second["study_training_time"] == 82781.0 and second["study_flags"] == ["tables_disagree"]
    assert "Study's training time, one RTX 4060 (s)" in md
    assert "| 2:00:00 |" in md and "| 2 Days 21 Hours 12 Minutes |" in md


def test_references(client: TestClient, make_key: Callable[..., dict[str, str]]) -> None:
    data = client.get("/v1/reports/references", headers=make_key("read")).json()
    by = {(r["task"], r["model"], r["metric"]): r for r in data["items"]}
    assert by[("cifar10", "resnet110", "test error (%)")]["mean"] == 6.61
    assert by[("coco", "resnet101", "mAP (%)")]["value"] == 77.3
    assert not by[("coco", "resnet101", "detection mAP@[.5, .95] (%)")]["comparable"]


def test_table1_over_recorded_runs_beside_he_et_al_and_the_seed_study(
    client: TestClient, make_key: Callable[..., dict[str, str]], study: dict[str, str]
) -> None:
    reader = make_key("read")
    runs = ",".join([study["resnet20"], study["resnet56"], study["plain56"]])
    data = client.get(f"/v1/reports/table1?runs={runs}", headers=reader).json()
    keys = [c["key"] for c in data["columns"]]
    assert keys.index("paper_error") < keys.index("study_accuracy") < keys.index("study_flags")
    r20, r56, p56 = data["rows"]
    # ours, He et al. 2016's Table 6, and the study's Table 1 as printed (0.9154 / .0736 in %)
    assert (r56["accuracy"], r56["paper_error"]) == (pytest.approx(93.10), 6.97)
    assert (r56["study_accuracy"], r56["study_error"], r56["study_f1"]) == (91.54, 7.36, 91.11)
    assert r56["study_flags"] == ["accuracy_plus_error", "baseline_not_he_2016"]
    assert (r20["study_accuracy"], r20["study_flags"]) == (84.78, ["accuracy_plus_error"])
    assert p56["paper_error"] is None and p56["study_accuracy"] is None
    assert [s["row"] for s in data["study"]] == ["ResNet20", "ResNet56"]
    assert any(".069" in n and "6.97" in n for n in data["notes"])

    md = client.get(f"/v1/reports/table1?runs={runs}&format=md", headers=reader).text
    assert "Paper's error (%)" in md and "Study's accuracy (%)" in md and "Study's error (%)" in md
    row = f"| resnet56 | {study['resnet56'][:8]} | 93.10 | 92.10 | 91.10 | 90.10 | 6.90 | 6.97 |"
    assert f"{row} 0:26:40 | 91.54 | 93.65 | 91.47 | 91.11 | 7.36 |" in md
    response = client.get(f"/v1/reports/table1?runs={runs}&format=csv", headers=reader)
    parsed = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["paper_error"], r["study_accuracy"]) for r in parsed] == [
        ("8.75", "84.78"),
        ("6.97", "91.54"),
        ("", ""),
    ]
    grouped = client.get(f"/v1/reports/table1?runs={runs}&aggregate=true", headers=reader).json()
    assert [r["study_accuracy"] for r in grouped["rows"]] == [84.78, 91.54, None]


def test_references_list_both_sources(
    client: TestClient, make_key: Callable[..., dict[str, str]]
) -> None:
    data = client.get("/v1/reports/references", headers=make_key("read")).json()
    assert [s["key"] for s in data["sources"]] == ["he2016", "chen2019", "seed_study"]
    assert data["sources"][0]["citation"].startswith("He, Zhang, Ren, Sun")
    assert "RTX 4060" in data["sources"][2]["hardware"]
    rows = {(i["table"], i["row"]): i for i in data["study"]["items"]}
    assert len(rows) == 10
    assert rows[(1, "ResNet110")]["printed"] == {
        "accuracy": "0.9564",
        "precision": "0.9456",
        "recall": "0.9684",
        "f1": "0.9231",
        "error": ".0691",
        "baseline_error": ".064",
    }
    assert {f["code"] for f in rows[(1, "ResNet110")]["flags"]} == {
        "accuracy_plus_error",
        "above_he_2016",
    }
    assert all(rows[(1, r)]["flags"] for r in ("ResNet20", "ResNet32", "ResNet44", "ResNet56"))
    assert rows[(3, "MS COCO")]["training_time"] == "22 Hours 59 Minutes 41 s"


@pytest.mark.parametrize("kind", sorted(FIGURES))
def test_each_figure_is_a_valid_png_and_svg_of_the_runs(
    kind: str, client: TestClient, make_key: Callable[..., dict[str, str]], study: dict[str, str]
) -> None:
    reader = make_key("read")
    runs = ",".join(study.values())
    png = client.get(f"/v1/figures/{kind}.png?runs={runs}", headers=reader)
    assert png.status_code == 200, png.text
    assert png.headers["content-type"] == "image/png"
    check_png(png.content)
    svg = client.get(f"/v1/figures/{kind}.svg?runs={runs}", headers=reader)
    assert svg.status_code == 200, svg.text
    assert svg.headers["content-type"].startswith("image/svg+xml")
    names = {
        "throughput": ["resnet20", "plain56"],
        "confusion": ["resnet20", "plain20"],
    }.get(kind, list(study))
    ids = (
        [f"run-{study['resnet56']}"] if kind in ("training_time_vs_depth", "error_vs_depth") else []
    )
    check_svg(svg.content, texts=names, ids=ids)


def test_figures_change_with_the_runs(
    client: TestClient, make_key: Callable[..., dict[str, str]], study: dict[str, str]
) -> None:
    reader = make_key("read")
    two = client.get(
        f"/v1/figures/curves.svg?runs={study['resnet20']},{study['plain20']}", headers=reader
    )
    one = client.get(f"/v1/figures/curves.svg?runs={study['resnet20']}", headers=reader)
    assert "plain20" in two.text and "plain20" not in one.text


def test_figures_and_tables_of_an_experiment(
    client: TestClient, make_key: Callable[..., dict[str, str]], db: sessionmaker[Session]
) -> None:
    with session_scope(db) as session:
        experiment = records.create_experiment(session, name="seeds", kind="grid", spec={})
        for seed, acc in enumerate((0.90, 0.92)):
            run = record_run(session, "resnet20", accuracy=acc, epoch_seconds=10.0, seed=seed)
            records.attach_to_experiment(
                session,
                experiment,
                run,
                cell={"architecture": "resnet20", "seed": seed, "params": {}},
            )
        experiment_id = experiment.id
    reader = make_key("read")
    data = client.get(
        f"/v1/reports/table1?experiment={experiment_id}&aggregate=true", headers=reader
    ).json()
    [row] = data["rows"]
    assert row["n"] == 2 and row["accuracy"] == pytest.approx(91.0)
    assert row["accuracy_std"] == pytest.approx(1.4142, abs=1e-3)
    check_png(
        client.get(f"/v1/figures/curves.png?experiment={experiment_id}", headers=reader).content
    )


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("", "query.runs"),
        (f"runs={'a' * 32}&experiment={'b' * 32}", "query.runs"),
        ("runs=a", "query.runs.0"),  # not a run id
        ("runs=,", "query.runs.0"),
        ("experiment=x", "query.experiment"),
        (f"runs={'a' * 32}&format=xlsx", "query.format"),
    ],
)
def test_bad_selections_are_422_naming_the_field(
    query: str, field: str, client: TestClient, make_key: Callable[..., dict[str, str]]
) -> None:
    response = client.get(f"/v1/reports/table1?{query}", headers=make_key("read"))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == field


def test_runs_or_experiments_that_do_not_exist_are_404(
    client: TestClient, make_key: Callable[..., dict[str, str]]
) -> None:
    reader, missing = make_key("read"), "0" * 32
    for query in (f"runs={missing}", f"experiment={missing}", f"runs={missing},{'1' * 32}"):
        response = client.get(f"/v1/reports/table1?{query}", headers=reader)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "not_found"
        assert missing in response.json()["error"]["message"]
    response = client.get(f"/v1/figures/curves.png?runs={missing}", headers=reader)
    assert response.status_code == 404


def test_figure_errors(
    client: TestClient, make_key: Callable[..., dict[str, str]], db: sessionmaker[Session]
) -> None:
    reader = make_key("read")
    with session_scope(db) as session:
        fresh = records.create_run(session, architecture="resnet20", dataset="cifar10", config={})
        run_id = fresh.id
    response = client.get(f"/v1/figures/curves.png?runs={run_id}", headers=reader)
    assert response.status_code == 422
    assert (
        "no" in response.json()["error"]["message"]
        and "epoch" in response.json()["error"]["message"]
    )
    assert client.get(f"/v1/figures/pie.png?runs={run_id}", headers=reader).status_code == 422
    assert client.get(f"/v1/figures/curves.gif?runs={run_id}", headers=reader).status_code == 422
    assert client.get(f"/v1/figures/curves.png?runs={run_id}").status_code == 401
    assert (
        client.get(f"/v1/figures/curves.png?runs={run_id}", headers=make_key("train")).status_code
        == 403
    )
