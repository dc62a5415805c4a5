"""What the service keeps: responses, the decision log, API keys.

Recorded responses (shown / accepted / declined) that the contact policy reads, the
encrypted decision log with its records and packs, its write-behind queue and its key file,
replay of a logged decision, API keys, the adaptive correction kept fresh from the
responses (``learning``), and the SQLite helpers they share.

May import ``recommender.policy`` and the layers below it (replay recomputes a decision
with the offer engine); nothing above.
"""
