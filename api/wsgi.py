"""WSGI entry point for gunicorn: ``gunicorn 'api.wsgi:app'`` (configured by NBO_* variables)."""

import logging
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from api import create_app  # noqa: E402
from api.observability import configure_access_log  # noqa: E402

logging.basicConfig(level=os.environ.get("NBO_LOG_LEVEL", "INFO"),
                    format="%(asctime)s %(levelname)s %(name)s %(message)s")
configure_access_log()  # api.access: one JSON object per line
app = create_app()
