"""Campaign lists over every customer: who gets which offer, within quotas.

A campaign's spec (TOML), the run that scores customers chunk by chunk through the same
offer engine as the API and keeps a bounded pool of candidates, the greedy quota
assignment, and the list and summary written for the campaign team; one product's target
list. Ties between customers are broken by a stable hash of their id (``ties``).

A surface over the layers below: it may import ``recommender.store`` (decisions are logged),
``recommender.policy``, ``recommender.ranking``, ``recommender.data``; not the service or
the CLI.
"""
