"""Lists written where Spark writes: a Parquet dataset (a folder of files), or CSV on request,
replacing an earlier list whole or not at all."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pandas as pd

from ..exceptions import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

_TYPES = {"i": "long", "u": "long", "f": "double", "b": "boolean"}


def spark_schema(frame: pd.DataFrame) -> str:
    """The frame's columns as a Spark schema: numbers stay numbers, anything else is text."""
    return ", ".join(f"`{name}` {_TYPES.get(frame[name].dtype.kind, 'string')}"
                     for name in frame.columns)


def write_dataset(spark: SparkSession, frame: pd.DataFrame, out: str) -> str:
    """The list at ``out`` (a path or URI Spark writes): CSV files with a header when ``out``
    ends in ``.csv``, else Parquet. Written beside it first, then moved in place of any
    earlier list, so that a failed write leaves the earlier list as it was."""
    out = out.rstrip("/")
    if not out:
        raise ConfigError("output: name a folder for the list")
    rows = spark.createDataFrame(frame.astype({c: object for c in frame.columns
                                               if frame[c].dtype.kind not in _TYPES}),
                                 schema=spark_schema(frame))
    partial = f"{out}.partial-{uuid.uuid4().hex[:8]}"
    writer = rows.write.mode("errorifexists")
    if out.lower().endswith(".csv"):
        writer.option("header", "true").csv(partial)
    else:
        writer.parquet(partial)
    jvm = spark.sparkContext._jvm
    fs_path = jvm.org.apache.hadoop.fs.Path
    target, written = fs_path(out), fs_path(partial)
    fs = target.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if fs.exists(target):  # from here until the rename, the new list is at ``partial``
        fs.delete(target, True)
    if not fs.rename(written, target):
        raise ConfigError(f"output {out}: could not move the written list into place; it is "
                          f"at {partial}")
    return out
