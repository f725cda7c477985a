"""``resnet weights``: published ImageNet weights: list, download (checked), import, export.

``resnet weights import FILE --arch resnet50 --out MODEL.keras`` writes a model of ours that
computes what the file's model computes on raw [0, 255] RGB pixels: its stride placement and
padding are the source's, its ``preprocess`` layer does the source's normalisation. That model
serves, evaluates and exports like any other, and a run can start from it (``init_from``).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from core.cli.output import console, echo_json, err_console, fail


class WeightsSource(enum.StrEnum):
    keras = "keras"
    torchvision = "torchvision"


def build_weights_app() -> typer.Typer:
    """The ``weights`` command group."""
    app = typer.Typer(help="Published ImageNet weights: list, download, import.")
    app.command("list")(list_weights)
    app.command("download")(download)
    app.command("import")(import_weights)
    app.command("export")(export_weights)
    return app


def list_weights(
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """The published weights `download` knows, with where they come from."""
    from dataclasses import asdict

    from core.models.weights import PUBLISHED

    if json_out:
        echo_json([asdict(entry) for entry in PUBLISHED.values()])
        return
    table = Table(title="Published ImageNet weights (--json: URLs)", title_justify="left")
    for column in ("name", "architecture", "checksum"):
        table.add_column(column, no_wrap=True)
    for entry in PUBLISHED.values():
        checksum = f"md5 {entry.md5}" if entry.md5 else f"sha256 {entry.sha256_prefix}…"
        table.add_row(entry.name, entry.architecture, checksum)
    console.print(table)


def download(
    name: Annotated[str, typer.Argument(help="e.g. resnet50-keras, resnet50-torchvision-v2.")],
    out: Annotated[Path, typer.Option(help="The folder to download into.")] = Path("."),
    url: Annotated[
        str | None,
        typer.Option(help="Another location of the same file (a mirror, or file:// a copy)."),
    ] = None,
) -> None:
    """Download published weights; the file is kept only if its checksum is the published one."""
    from core.models.weights import WeightsFileError, download_weights, published

    try:
        entry = published(name)
        with err_console.status(f"downloading {escape(entry.url if url is None else url)}"):
            path = download_weights(entry, out, url=url)
    except WeightsFileError as exc:
        fail(str(exc))
    console.print(escape(str(path)), highlight=False)


def import_weights(
    file: Annotated[
        Path, typer.Argument(help="A weights file: .h5, .weights.h5, .safetensors, .pth.")
    ],
    arch: Annotated[str, typer.Option("--arch", help="Our architecture, e.g. resnet50.")],
    out: Annotated[Path, typer.Option("--out", help="The model to write (.keras).")],
    source: Annotated[
        WeightsSource | None,
        typer.Option(help="Insist on keras or torchvision weights (default: recognised)."),
    ] = None,
    input_size: Annotated[
        int, typer.Option(min=8, help="The model's input height and width.")
    ] = 224,
    num_classes: Annotated[
        int | None,
        typer.Option(min=1, help="A new head's size, for a file without a head (_notop)."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Import a published weights file as a model of ours (.keras)."""
    if out.suffix != ".keras":
        fail(f"--out must name a .keras file; got {out}")
    from core.models.weights import WeightsFileError, import_model, open_weights_file

    try:
        with err_console.status(f"importing {escape(str(file))}"):
            model = import_model(
                file,
                arch,
                source=None if source is None else source.value,
                input_shape=(input_size, input_size, 3),
                num_classes=num_classes,
            )
            described = open_weights_file(file)
    except (WeightsFileError, ValueError) as exc:
        fail(str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    layout = described.layout
    facts = {
        "model": str(out),
        "architecture": arch,
        "source": described.source,
        "format": described.format,
        "stride_in": layout.stride_in if layout else None,
        "padding": layout.padding if layout else None,
        "classes": int(model.output.shape[-1]),
        "head_from_file": described.head_classes is not None,
        "input_shape": [input_size, input_size, 3],
    }
    if json_out:
        echo_json(facts)
        return
    console.print(f"[bold]{escape(str(out))}[/bold]", highlight=False)
    console.print(
        f"  {facts['source']} weights ({facts['format']}) as {arch}: stride in the "
        f"{facts['stride_in']} convolution, {facts['padding']} padding, {facts['classes']} "
        f"classes{'' if facts['head_from_file'] else ' (a new head)'}",
        highlight=False,
    )


def export_weights(
    model_path: Annotated[
        Path, typer.Argument(help="A .keras model of ours (a run's model.keras).")
    ],
    out: Annotated[Path, typer.Option("--out", help="The state dict to write (.safetensors).")],
) -> None:
    """Write a model's weights as torchvision's state dict, for PyTorch or for init_from.

    The model must compute what torchvision's would with them: trained from torchvision weights
    (its layout and normalisation are then theirs).
    """
    if out.suffix != ".safetensors":
        fail(f"--out must name a .safetensors file; got {out}")
    from core.inference import ModelLoadError, load_keras_model
    from core.models.weights import WeightsFileError, torchvision_state_dict, write_safetensors

    try:
        state = torchvision_state_dict(load_keras_model(model_path))
    except (ModelLoadError, WeightsFileError) as exc:
        fail(str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_safetensors(out, state, metadata={"format": "pt"})
    console.print(f"{escape(str(out))}: {len(state)} tensors", highlight=False)
