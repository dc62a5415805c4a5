"""Where views find the service they answer from.

Views never keep the service between requests: a hot reload swaps it, and each request
should read the one current when it started.
"""

from __future__ import annotations

from flask import current_app

from recommender.service import OfferService


def current_service() -> OfferService:
    """The offer service answering this request."""
    return current_app.extensions["nbo"]


def loaded_service() -> OfferService | None:
    """The offer service if one is loaded, else None: for readiness, logs and metrics, which
    must answer even while no model is being served."""
    return current_app.extensions.get("nbo")
