"""Next-best-offer recommender for retail banks.

The package reads like the design: ``data`` loads and validates the bank's extracts,
``catalog`` and ``segments`` hold the products and life stages, ``interactions`` builds the
customer x product matrix, ``cf`` wraps implicit, ``eligibility`` and ``explain`` turn scores
into offers with reasons, ``offers`` serves them, ``artifacts`` versions what was trained.
"""

__version__ = "0.1.0"
