"""gunicorn settings for ``nbo serve`` (``gunicorn -c api/gunicorn_conf.py api.wsgi:app``).

``NBO_BIND``, ``NBO_WORKERS``, ``NBO_THREADS``, ``NBO_TIMEOUT`` and ``NBO_LOG_LEVEL`` choose
them. The master only forks and watches: each worker loads the model and maps the customer
book itself (memory-mapped, so workers share one copy), and nothing is trained or scored in
the master (implicit hangs in forked children after such work; see DESIGN.md).

SIGHUP reloads the model in place in every worker (``api.reload``) instead of gunicorn's
default of restarting them, so no connection is dropped. gunicorn's own access log is off:
it would write raw paths, which hold customer ids; the app writes JSON lines without them.
"""

import os
import shutil
from pathlib import Path

bind = os.environ.get("NBO_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("NBO_WORKERS", "2"))
threads = int(os.environ.get("NBO_THREADS", "1"))
worker_class = "gthread" if threads > 1 else "sync"
timeout = int(os.environ.get("NBO_TIMEOUT", "30"))
graceful_timeout = 30
keepalive = 5
backlog = 2048
preload_app = False
accesslog = None
errorlog = "-"
loglevel = os.environ.get("NBO_LOG_LEVEL", "info")
_STATE = Path(os.environ.get("NBO_STATE_DIR", "var"))


def on_starting(server):
    """Prometheus files of an earlier run would add old counts to this one's."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True)


def when_ready(server):
    from api.reload import request_reload

    def reload_in_place():
        server.log.info("SIGHUP: asking every worker to reload the current model")
        request_reload(_STATE)

    server.handle_hup = reload_in_place


def child_exit(server, worker):
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
