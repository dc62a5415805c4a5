"""The Flask HTTP service: next-best offers per customer, with reasons.

``STATE_DIR`` holds what the service writes: recorded responses, the decision log and its
encryption key.

``create_app(config)`` takes defaults, then ``NBO_*`` environment variables, then the test
mapping; the model and the customer book are loaded once into ``app.extensions["nbo"]``.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from recommender.service import load_service

DEFAULTS = {"DATA_DIR": "data/demo", "MODELS_DIR": "models", "MODEL_VERSION": "current",
            "POLICY_FILE": None, "STATE_DIR": "var"}
_ENV_KEYS = ("DATA_DIR", "MODELS_DIR", "MODEL_VERSION", "POLICY_FILE", "STATE_DIR")


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    app.config.update({k: os.environ[f"NBO_{k}"] for k in _ENV_KEYS if f"NBO_{k}" in os.environ})
    app.config.update(config or {})
    app.json.ensure_ascii = False  # Chinese text as characters, not \u escapes
    app.json.sort_keys = False

    cfg = app.config
    service = cfg.get("SERVICE") or load_service(
        cfg["DATA_DIR"], cfg["MODELS_DIR"], cfg["MODEL_VERSION"], policy_file=cfg["POLICY_FILE"],
        state_dir=cfg["STATE_DIR"],
    )
    app.extensions["nbo"] = service

    from . import customers, errors, health, products

    errors.register(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(products.bp, url_prefix="/v1")
    app.register_blueprint(customers.bp, url_prefix="/v1")
    return app
