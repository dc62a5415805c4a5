"""The Flask HTTP service: next-best offers per customer, with reasons.

``DATABASE_URL`` names the database of the stores: recorded responses, the decision log, the
served version and the API keys (``recommender.store.database``; default: ``nbo.db``, SQLite,
in ``STATE_DIR``; PostgreSQL for several replicas). ``STATE_DIR`` holds the decision log's
encryption key and this machine's caches.

``SCORE_TABLES`` says whether answers read the model's precomputed ranker scores
(``recommender.ranking.score_table``): ``use`` (default, when built), ``background`` (build
them in a child process if missing; ``nbo serve``) or ``off``. ``DECISION_FLUSH_SECONDS``
above 0 writes the decision log in packs that often instead of once per answer
(``recommender.store.decisions.DecisionLog``; ``nbo serve`` uses 0.1).

``create_app(config)`` takes defaults, then ``NBO_*`` environment variables, then the test
mapping; the model and the customer book are loaded once into ``app.extensions["nbo"]``.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from .json_provider import OrjsonProvider

DEFAULTS = {"DATA_DIR": "data/demo", "MODELS_DIR": "models", "MODEL_VERSION": "current",
            "POLICY_FILE": None, "STATE_DIR": "var", "DATABASE_URL": None, "SCORE_TABLES": "use",
            "DECISION_FLUSH_SECONDS": 0.0}
_ENV_KEYS = ("DATA_DIR", "MODELS_DIR", "MODEL_VERSION", "POLICY_FILE", "STATE_DIR",
             "DATABASE_URL", "SCORE_TABLES", "DECISION_FLUSH_SECONDS")


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.json = OrjsonProvider(app)  # insertion order, Chinese text as characters
    app.config.from_mapping(DEFAULTS)
    app.config.update({k: os.environ[f"NBO_{k}"] for k in _ENV_KEYS if f"NBO_{k}" in os.environ})
    app.config.update(config or {})
    cfg = app.config

    from . import (
        auth,
        customers,
        errors,
        health,
        metrics,
        observability,
        openapi,
        products,
        reload,
    )

    app.extensions["nbo"] = cfg.get("SERVICE") or reload.load_at_start(cfg)

    errors.register(app)
    metrics.init_app(app)  # GET /metrics
    observability.register(app)  # request id, access log, request metrics: first hooks in line
    auth.init_app(app)  # after observability: refused requests are logged and counted too
    app.register_blueprint(openapi.bp)  # GET /openapi.json
    app.register_blueprint(health.bp)
    app.register_blueprint(products.bp, url_prefix="/v1")
    app.register_blueprint(customers.bp, url_prefix="/v1")
    reload.init_app(app)  # POST /admin/reload; follows reloads of the other workers
    from . import teller

    app.register_blueprint(teller.bp, url_prefix="/teller")  # the teller console: page, assets
    return app
