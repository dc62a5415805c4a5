"""Where views find the service they answer from, and the request models of what it serves.

Views never keep the service between requests: a hot reload swaps it, and each request
should read the one current when it started.
"""

from __future__ import annotations

from flask import current_app

from recommender.service import OfferService

from .requests import RequestModels

_REQUESTS = "nbo_requests"


def current_service() -> OfferService:
    """The offer service answering this request."""
    return current_app.extensions["nbo"]


def loaded_service() -> OfferService | None:
    """The offer service if one is loaded, else None: for readiness, logs and metrics, which
    must answer even while no model is being served."""
    return current_app.extensions.get("nbo")


def current_requests() -> RequestModels:
    """The request models of the current service's catalog and policy: built on the first
    request after a load or a reload, then reused (a swap of the service is seen by identity)."""
    service = current_service()
    built = current_app.extensions.get(_REQUESTS)
    if built is None or built[0] is not service:
        built = (service, RequestModels.for_service(service))
        current_app.extensions[_REQUESTS] = built  # one assignment: atomic for readers
    return built[1]
