"""Each figure is a real PNG and SVG drawn from the runs' numbers (not a blank canvas)."""

from __future__ import annotations

import pytest

from core.reports.figures import FIGURES, FigureDataError, figure
from core.reports.runs import RunData
from tests.core.reports.factory import check_png, check_svg, labelled, make_run

CONFUSION = [[50, 3, 2], [4, 45, 6], [1, 2, 60]]


def depth_study() -> list[RunData]:
    return labelled(
        make_run(
            "a1" * 16, "resnet20", accuracy=0.91, seconds=600, speed=4000, confusion=CONFUSION
        ),
        make_run("b2" * 16, "plain20", accuracy=0.90, seconds=560, speed=4200),
        make_run("c3" * 16, "resnet56", accuracy=0.93, seconds=1500, speed=1600),
        make_run("d4" * 16, "plain56", accuracy=0.87, seconds=1450, speed=1700),
    )


def test_the_figures_are_the_studys() -> None:
    assert set(FIGURES) == {
        "training_time_vs_depth",
        "error_vs_depth",
        "curves",
        "plain_vs_residual",
        "confusion",
        "throughput",
    }


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_png_decodes_and_is_not_blank(name: str) -> None:
    check_png(figure(name, depth_study(), fmt="png"))


@pytest.mark.parametrize(
    ("name", "texts", "ids"),
    [
        (
            "training_time_vs_depth",
            ["resnet20", "plain56", "training time (min)"],
            ["run-" + "a1" * 16],
        ),
        ("error_vs_depth", ["resnet56", "He et al. 2016"], ["series-paper", "run-" + "d4" * 16]),
        (
            "curves",
            ["resnet20 (training)", "plain56 (validation)"],
            ["run-" + "b2" * 16 + "-val_loss"],
        ),
        (
            "plain_vs_residual",
            ["plain20 (train)", "resnet56 (train)"],
            ["run-" + "d4" * 16 + "-train-error"],
        ),
        ("confusion", ["resnet20", "cat", "ship", "60"], ["run-" + "a1" * 16 + "-confusion"]),
        ("throughput", ["resnet20", "plain56", "images / s"], ["training-resnet56"]),
    ],
)
def test_svg_parses_and_names_the_runs(name: str, texts: list[str], ids: list[str]) -> None:
    check_svg(figure(name, depth_study(), fmt="svg"), texts=texts, ids=ids)


def test_the_drawing_follows_the_data() -> None:
    one = figure("error_vs_depth", depth_study(), fmt="png")
    worse = depth_study()
    worse[2]["metrics"]["accuracy"] = 0.5
    assert figure("error_vs_depth", worse, fmt="png") != one
    assert figure("error_vs_depth", depth_study(), fmt="png") == one  # deterministic
    svg = figure("error_vs_depth", depth_study(), fmt="svg").decode()
    assert "resnet56" in svg and "plain56" in svg


def test_the_paper_line_only_beside_cifar_nets() -> None:
    imagenet = labelled(make_run("e5" * 16, "resnet50", accuracy=0.76, dataset="imagenet:/d"))
    shown = check_svg(figure("error_vs_depth", imagenet, fmt="svg"), texts=["resnet50"])
    assert "He et al." not in shown


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_nothing_to_draw_is_an_error_not_an_empty_picture(name: str) -> None:
    empty = labelled(make_run("f6" * 16, "wrn28_10", accuracy=None, seconds=None, epochs=0))
    with pytest.raises(FigureDataError):
        figure(name, empty, fmt="png")


def test_unknown_names_and_formats() -> None:
    with pytest.raises(ValueError, match="Unknown figure"):
        figure("pie", depth_study())
    with pytest.raises(ValueError, match="png or svg"):
        figure("curves", depth_study(), fmt="gif")
