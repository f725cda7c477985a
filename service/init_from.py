"""``init_from`` over HTTP: a run starts from a weights file under the data root, checked at the
door.

The path is taken relative to the data root and must resolve inside it (``..``, absolute paths
and symlinks out are refused), as a dataset's is. The file is then read as the worker will read
it, names and shapes only (:mod:`core.models.weights`: no TensorFlow here), and must fit the
run's architecture exactly. Its stride placement, padding and normalisation become the run's
(published weights compute what they were trained to only with those): a request that sets one
of them otherwise is refused, naming both.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

from core.data.loader import resolve_source_path
from core.models.specs import parse_architecture
from core.models.weights import open_weights_file
from jobs.settings import Settings
from service.data import private_message
from service.errors import Locate, invalid


def init_from_overrides(
    path: str,
    *,
    architecture: str,
    sent: Mapping[str, Any],
    settings: Settings,
    locate: Locate,
) -> dict[str, Any]:
    """The config overrides of a run that starts from ``path``: ``init_from`` itself and the
    options the file's weights need.

    Args:
        path: the request's ``init_from``, relative to the data root.
        architecture: the request's architecture (an invalid one is left for the config's
            validation to report).
        sent: the hyperparameters the request set (dotted paths).
        settings: for the data root.
        locate: where a field sits in the request.

    Raises:
        ApiError: 422 on ``init_from`` for a path outside the root, a missing or unreadable
            file, or weights of another architecture; 422 on ``stride_in``, ``padding`` or
            ``normalization`` when the request contradicts the file.
    """
    field = locate(("init_from",))
    try:
        resolved = resolve_source_path(path, settings.data_dir, must_exist=True)
        weights = open_weights_file(resolved)
    except ValueError as exc:  # DataError and WeightsFileError are ValueErrors
        raise invalid(field, private_message(str(exc), settings), path) from None
    overrides: dict[str, Any] = {"init_from": PurePosixPath(path).as_posix()}
    try:
        spec = parse_architecture(architecture)
    except ValueError:
        return overrides  # resolve_config names the architecture's problem
    try:
        weights.check(spec)
    except ValueError as exc:
        raise invalid(field, private_message(str(exc), settings), path) from None
    for option, needed in weights.required_options(spec).items():
        given = sent.get(option)
        if given is not None and given != needed:
            raise invalid(
                locate((option,)),
                f"the {weights.source} weights of init_from were trained with {option} "
                f"{needed!r}; leave {option} out or set it to {needed!r}",
                given,
            )
        overrides[option] = needed
    return overrides
