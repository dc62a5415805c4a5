"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: a model and the
customer book are loaded and the stores' database answers, so traffic may be sent here)."""

from flask import Blueprint

from .errors import error_response
from .state import loaded_service

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Cheap and always 200 while the process runs; names the model if one is loaded."""
    service = loaded_service()
    if service is None:
        return {"status": "ok"}
    return {"status": "ok", "model_version": service.engine.model.version,
            "customers": len(service.book)}


@bp.get("/readyz")
def readyz():
    """503 until a model and the book are loaded and while the database cannot be used: a
    load balancer sends traffic only where both are."""
    service = loaded_service()
    if service is None or service.engine.model is None or service.book is None:
        return error_response(503, "not_ready", "no model and customer book are loaded yet")
    if (problem := service.stores_problem()) is not None:
        return error_response(503, "store_unavailable", problem)
    return {"status": "ready", "model_version": service.engine.model.version}
