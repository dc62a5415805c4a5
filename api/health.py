"""Liveness."""

from flask import Blueprint

from .state import current_service

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    service = current_service()
    return {"status": "ok", "model_version": service.engine.model.version,
            "customers": len(service.book)}
