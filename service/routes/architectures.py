"""``/v1/architectures``: the catalogue of ResNets with parameters, FLOPs and the paper's error."""

from __future__ import annotations

from fastapi import Request

from service.catalogue import Catalogue
from service.deps import ReadKey
from service.routes import keyed_router
from service.schemas import ArchitecturesPublic

router = keyed_router(prefix="/v1/architectures", tag="architectures")


@router.get(
    "",
    summary="The architecture catalogue",
)
def list_architectures(request: Request, key: ReadKey) -> ArchitecturesPublic:
    """Every named architecture: family, depth, the paper's error, and its trainable
    parameters and FLOPs (multiply-adds per image), which ship with the package (a catalogue
    cache built by ``resnet archs`` overrides them). Any name of the accepted forms
    (resnet{6n+2}, wrn{6n+4}_{k}, …) can be trained, not only these."""
    catalogue: Catalogue = request.app.state.catalogue
    items, counted = catalogue.entries()
    return ArchitecturesPublic(items=items, counted=counted)
