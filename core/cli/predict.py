"""``resnet predict``: classify image files with a model file, or through a remote predictor.

The library's command only reads model files. A program that can ask a server (the installed
``resnet``) passes a :class:`RemotePredictor` to :func:`core.cli.build_app`, and ``predict``
grows ``--server``, ``--model`` and ``--api-key``; both variants print results the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Protocol

import typer
from rich.markup import escape

from core.cli.output import EXIT_FAILED, console, echo_json, err_console, fail, warn

TopK = Annotated[int, typer.Option(min=1, help="Most probable classes per image.")]
JsonOut = Annotated[bool, typer.Option("--json", help="JSON on stdout.")]


class RemotePredictor(Protocol):
    """Asks a server to classify ``images`` with its model ``model``.

    Returns one result per image, as :func:`predict_local` does (``{"image", "predictions"}``
    or ``{"image", "error"}`` for an image the server refused); an error that is not about an
    image (no such model, a bad key, no server) ends the command through :func:`fail`.
    """

    def __call__(
        self, server: str, model: str, images: list[Path], *, top_k: int, api_key: str | None
    ) -> list[dict[str, Any]]: ...


def load_predictor(path: Path) -> Any:
    """A :class:`core.inference.Predictor` for a ``.keras`` file or a run folder."""
    from core.inference import ModelLoadError, Predictor
    from core.training.rundir import RunDir

    model_path = RunDir(path).model if path.is_dir() else path
    with err_console.status(f"loading {escape(str(model_path))}"):
        try:
            return Predictor.load(model_path)
        except ModelLoadError as exc:
            fail(str(exc))


def predict(
    model: Annotated[Path, typer.Argument(help="A .keras model, or a run folder holding one.")],
    images: Annotated[list[Path], typer.Argument(help="Image files (JPEG, PNG, ...).")],
    top_k: TopK = 5,
    json_out: JsonOut = False,
) -> None:
    """Classify images; an unreadable image is reported by name and the rest still predicted."""
    show_predictions(predict_local(model, images, top_k), json_out=json_out)


def predict_with_server(remote: RemotePredictor) -> Callable[..., None]:
    """The ``predict`` command that also takes ``--server URL --model NAME``, asking ``remote``."""

    def predict(
        model: Annotated[
            Path,
            typer.Argument(
                help="A .keras model, or a run folder holding one (with --server: the first image)."
            ),
        ],
        images: Annotated[
            list[Path] | None, typer.Argument(help="Image files (JPEG, PNG, ...).")
        ] = None,
        top_k: TopK = 5,
        json_out: JsonOut = False,
        server: Annotated[
            str | None,
            typer.Option(help="Ask a running service (its URL) instead of loading a model."),
        ] = None,
        model_name: Annotated[
            str | None,
            typer.Option("--model", help="With --server: the model's name (or a run id)."),
        ] = None,
        api_key: Annotated[
            str | None,
            typer.Option(envvar="RESNET_API_KEY", help="With --server: a 'predict' key."),
        ] = None,
    ) -> None:
        """Classify images; an unreadable image is reported by name and the rest still predicted.

        Locally with a model file, or through a service:
        ``resnet predict --server URL --model NAME IMAGE...`` (key in ``RESNET_API_KEY``).
        """
        if server is not None:
            if not model_name:
                fail("--server needs --model NAME (a model's name or a run id).")
            results = remote(
                server, model_name, [model, *(images or [])], top_k=top_k, api_key=api_key
            )
        elif not images:
            fail("give a model (a .keras file or a run folder) and at least one image.")
        else:
            results = predict_local(model, images, top_k)
        show_predictions(results, json_out=json_out)

    return predict


def show_predictions(results: list[dict[str, Any]], *, json_out: bool) -> None:
    """Print each image's top-k (or its error); exit 1 if any image could not be read."""
    errors = [r for r in results if "error" in r]
    if json_out:
        echo_json(results)
    else:
        for r in results:
            if "error" in r:
                err_console.print(
                    f"[red]{escape(r['image'])}: {escape(r['error'])}[/red]", highlight=False
                )
                continue
            console.print(f"[bold]{escape(r['image'])}[/bold]", highlight=False)
            for rank, p in enumerate(r["predictions"], 1):
                console.print(
                    f"  {rank}. {escape(p['label']):<24} {100 * p['probability']:6.2f}%",
                    highlight=False,
                )
    if errors:
        warn(f"{len(errors)} of {len(results)} image(s) could not be read.")
        raise typer.Exit(EXIT_FAILED)


def predict_local(model: Path, images: list[Path], top_k: int) -> list[dict[str, Any]]:
    """Each image's top-k from the model file or run folder ``model``, or why it is unreadable."""
    from core.images import ImageDecodeError, decode_image

    predictor = load_predictor(model)
    decoded: dict[int, Any] = {}
    errors: dict[int, str] = {}
    for i, path in enumerate(images):
        try:
            decoded[i] = decode_image(path.read_bytes(), channels=predictor.channels)
        except (OSError, ImageDecodeError) as exc:
            errors[i] = str(exc)
    order = sorted(decoded)
    predictions = predictor.predict_arrays([decoded[i] for i in order], top_k) if order else []
    by_index = dict(zip(order, predictions, strict=True))
    results: list[dict[str, Any]] = []
    for i, path in enumerate(images):
        if i in errors:
            results.append({"image": str(path), "error": errors[i]})
        else:
            results.append({"image": str(path), "predictions": by_index[i]})
    return results
