"""Liveness."""

from flask import Blueprint, current_app

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    service = current_app.extensions["nbo"]
    return {"status": "ok", "model_version": service.engine.model.version,
            "customers": len(service.book)}
