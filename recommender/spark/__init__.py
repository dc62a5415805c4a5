"""Batch jobs past one machine, on Apache Spark: campaign lists, target lists and the
training tables of a bank too large for one process.

Spark reads the bank's extracts (Parquet paths, ``hdfs://`` or ``s3a://`` locations, Hive
tables), splits the customers into parts by a hash of their id, and each part is validated,
scored and decided in an executor by the same code as on one machine (``data.bank_parts``,
``campaign.run``, ``campaign.target_list``): there is one implementation of rules, scores
and arbitration. Quotas stay global: parts send back only the candidates that could still win
a place, and the driver runs the one exact assignment.

Above ``campaign`` and below the service and the surfaces; pyspark is imported only inside
functions, so the rest of the package runs without it.
"""
