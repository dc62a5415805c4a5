"""The bank's data: what its customers hold and who they are, read and checked.

Extracts (customers with only an id required, holdings as monthly snapshots or
opened/closed intervals, optional time-varying features) are read and validated here
(``extracts``, ``customers``, ``features``, ``intervals``, ``value_checks``, ``bank.toml``
through ``bank_config``), against the bank's vocabulary: canonical column names, one id map
per entity, the product catalog, its eligibility rules and the life-stage rules. The
customer book holds the latest holdings and profiles in memory, memory-mapped for server
workers, or in parts for a bank too large for one process. The demo bank and the Santander
importer write extracts of this shape.

The lowest layer: it imports nothing of the project but ``recommender.exceptions``. The
default catalog, life stages and policy (TOML) are package files in this folder.
"""
