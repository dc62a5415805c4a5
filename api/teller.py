"""The teller console: one page, with its script and style, served by the service itself.

Counters have no internet, so nothing is fetched from elsewhere: the Content-Security-Policy
allows this origin only. The page and its assets are open (``api.auth.OPEN_PREFIX``); the page
asks for the teller's key, keeps it in ``sessionStorage`` (gone when the tab closes) and sends
it as ``Authorization: Bearer`` with every ``/v1`` call it makes.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template

bp = Blueprint("teller", __name__, static_folder="teller_static", static_url_path="/static",
               template_folder="teller_static")

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:",
    "connect-src 'self'", "base-uri 'none'", "form-action 'none'", "frame-ancestors 'none'",
))


@bp.get("/", strict_slashes=False)
def page() -> Response:
    """The console; its script finds the API relative to the service's root."""
    response = Response(render_template("teller.html"), mimetype="text/html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Cache-Control"] = "no-store"  # a shared counter PC: no cached pages
    return response


@bp.after_request
def harden(response: Response) -> Response:
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
