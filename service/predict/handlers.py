"""What the predict routes answer, once matched and authenticated.

Both the FastAPI routes and :class:`~service.predict.dispatch.PredictDispatch` call these, so
the two ways in cannot answer differently.
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import Response

from core.ranking import ranked_labels
from service.inference.payload import query_options, read_predict, read_tf_serving
from service.inference.runtime import get_inference
from service.inference.serving import max_images, predict_images, unless_abandoned

DEFAULT_TOP_K = 5
JSON_TYPE = "application/json"


async def run_predict(request: Request, name: str, version: int | None) -> Response:
    """Each image's labels: ``{"model": {...}, "predictions": [{"name", "labels"}, ...]}``."""
    inference = get_inference(request.app)
    ref = await inference.resolve(name, version)
    top_k, threshold = query_options(request)
    payload = await read_predict(request, max_images=max_images(inference))
    top_k = payload.top_k if payload.top_k is not None else top_k
    threshold = payload.threshold if payload.threshold is not None else threshold
    model, rows = await unless_abandoned(request, predict_images(inference, ref, payload.images))
    k = min(top_k or DEFAULT_TOP_K, model.num_classes)  # as the core Predictor clamps it
    cut = model.threshold if threshold is None else threshold
    names = model.class_names
    body = {
        "model": {"name": ref.name, "version": ref.version, "run_id": ref.run_id},
        "predictions": [
            {
                "name": image.label,
                "labels": ranked_labels(
                    row, names, multi_label=model.multi_label, top_k=k, threshold=cut
                ),
            }
            for image, row in zip(payload.images, rows, strict=True)
        ],
    }
    # Built by hand, not through a response model: this is the hot path.
    return Response(json.dumps(body).encode(), media_type=JSON_TYPE)


async def run_tf_serving(request: Request, name: str, version: int | None) -> Response:
    """TF Serving's answer: ``{"predictions": [[p0, p1, ...], ...]}``, one row per instance."""
    inference = get_inference(request.app)
    ref = await inference.resolve(name, version)
    images = await read_tf_serving(request, max_images=max_images(inference))
    _, rows = await unless_abandoned(request, predict_images(inference, ref, images))
    body = {"predictions": [row.tolist() for row in rows]}
    return Response(json.dumps(body).encode(), media_type=JSON_TYPE)
