"""The decision policy: from scores to the offers a customer may be made, with reasons.

The policy's configuration (TOML), the rules (eligibility, suitability, consent, contact
policy) as vectorised masks, arbitration by propensity x value x context, the offer engine
that decides for one customer or a batch, the reasons in English and Chinese, why-not, the
adaptive correction of the propensity by customers' answers, and experiment arms.

May import ``recommender.ranking``, ``recommender.data`` and ``recommender.exceptions``.
"""
