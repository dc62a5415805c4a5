"""The Spark session of a batch job, and the trained model on its executors.

The model travels with the job (``SparkContext.addFile``): each executor fetches the version
folder once, and each Python worker loads it memory-mapped once, on its first part, as the
workers of ``nbo serve`` do; later parts in that worker reuse it (Spark reuses its Python
workers). OpenBLAS runs one thread per worker: Spark already runs one worker per core.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..exceptions import ConfigError
from ..policy.config import PolicyConfig, parse_policy
from ..policy.offers import OfferEngine
from ..ranking import artifacts

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# On one machine: every core, and each task tried up to 4 times, as a cluster would retry it
# (plain ``local[N]`` never retries a failed task).
DEFAULT_MASTER = "local[*,4]"

_SESSION_CONF = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.session.timeZone": "UTC",  # dates read as written, whatever the machine's zone
    # Parquet written by pandas stores nanosecond timestamps, which Spark cannot read as
    # timestamps: they come as integers (nanoseconds), which the extract checks read as dates
    # the way pandas does.
    "spark.sql.legacy.parquet.nanosAsLong": "true",
    # A part is a group of the cogroup: merged shuffle partitions put several parts in one
    # task, and the cores finish unevenly (seven parts on one, three on the other, measured).
    "spark.sql.adaptive.coalescePartitions.enabled": "false",
    "spark.executorEnv.OPENBLAS_NUM_THREADS": "1",
    "spark.python.worker.reuse": "true",
    "spark.ui.showConsoleProgress": "false",
}


def spark_session(master: str | None = None, app_name: str = "nbo") -> SparkSession:
    """The job's session: ``master`` if given, else what spark-submit configured, else
    ``DEFAULT_MASTER``. The project's settings apply to a session that already exists too."""
    # pyspark's toPandas still passes the copy keyword pandas 3 deprecates: nothing to act on
    warnings.filterwarnings("ignore", message="The copy keyword is deprecated",
                            category=DeprecationWarning)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # workers of a local master inherit it
    try:
        from pyspark import SparkConf
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise ConfigError("--engine spark needs pyspark: pip install 'nbo-recommender[spark]'"
                          ) from exc
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise ConfigError("--engine spark needs Java 17 or later (java on PATH, or JAVA_HOME)")

    builder = SparkSession.builder.appName(app_name)
    configured = SparkConf().get("spark.master")
    master = master or configured or DEFAULT_MASTER
    if master != configured:
        builder = builder.master(master)
    if master.startswith("local"):  # workers of this machine: this interpreter and its packages
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in _SESSION_CONF.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    for key, value in _SESSION_CONF.items():
        if not key.startswith(("spark.executorEnv.", "spark.python.", "spark.ui.")):
            session.conf.set(key, value)  # runtime settings of a session made before
    return session


@dataclass(frozen=True)
class ShippedModel:
    """A model version sent with the job, and the policy to decide with: what a task needs
    to build its ``OfferEngine``. Small: it is pickled into every task."""

    folder_name: str
    policy_text: str
    policy_source: str

    @property
    def key(self) -> tuple[str, str]:
        return self.folder_name, hashlib.sha256(self.policy_text.encode()).hexdigest()


def ship_model(spark: SparkSession, models_dir: str | Path, version: str,
               policy: PolicyConfig) -> ShippedModel:
    """Send the version folder with the job: each executor fetches it once."""
    folder = artifacts.resolve(models_dir, version)
    spark.sparkContext.addFile(str(folder), recursive=True)
    return ShippedModel(folder.name, policy.text, f"policy {policy.version}")


_ENGINES: dict[tuple[str, str], OfferEngine] = {}


def _task_cpus() -> int:
    """The cores Spark gives a task (``spark.task.cpus``, 1 by default): an executor runs
    as many tasks at once as it has cores, so a task using every core of the machine
    would oversubscribe it."""
    from pyspark import TaskContext

    context = TaskContext.get()
    return max(1, context.cpus()) if context is not None else 1


def executor_engine(shipped: ShippedModel) -> OfferEngine:
    """The engine of this Python worker: loaded (memory-mapped, checksums verified) on its
    first task, then reused."""
    engine = _ENGINES.get(shipped.key)
    if engine is None:
        from pyspark import SparkFiles

        folder = Path(SparkFiles.get(shipped.folder_name))
        model = artifacts.load(folder.parent, folder.name)
        if model.acquisition is not None:  # a task has its own cores, not the machine's
            model.acquisition.config = replace(model.acquisition.config,
                                               num_threads=_task_cpus())
        engine = OfferEngine(model, parse_policy(shipped.policy_text, shipped.policy_source))
        _ENGINES.clear()  # one model at a time per worker
        _ENGINES[shipped.key] = engine
        log.info("worker %d loaded model %s", os.getpid(), model.version)
    return engine
