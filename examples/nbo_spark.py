"""The application file spark-submit runs: the `nbo` command, its arguments as given.

    spark-submit [Spark options] examples/nbo_spark.py campaign --engine spark ...
"""

from recommender.cli import main

raise SystemExit(main())
