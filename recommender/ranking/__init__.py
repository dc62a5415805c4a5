"""Models that score customers for products, and how they are trained, judged and stored.

Collaborative filtering (implicit ALS and item-kNN), take-up rates per life stage, the
gradient-boosted acquisition ranker and its features, calibration of scores into take-up
probabilities, the servable rankers, training with its held-out evaluation, versioned model
artifacts, and the precomputed score table. ``reproducible`` keeps every score the same bits
on any CPU and batch.

May import ``recommender.data`` and ``recommender.exceptions``; nothing above.
"""
