"""Next-best-offer recommender for retail banks.

The package reads like the design, in layers, each importing only those below it
(tests/test_layers.py holds it to that): ``data`` reads and checks the bank's extracts,
``ranking`` trains and scores (collaborative filtering, the acquisition ranker, calibration,
versioned artifacts), ``policy`` turns scores into suitable offers with reasons, ``store``
keeps responses and decisions, ``campaign`` makes lists over every customer, ``spark`` runs
those lists and the training tables on Apache Spark; ``service``, ``cli`` and the ``api``
package are the surfaces.
"""

__version__ = "0.1.0"
