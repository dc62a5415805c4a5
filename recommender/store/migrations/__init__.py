"""Alembic migrations of the stores' schema; ``nbo db upgrade`` runs them
(``recommender.store.database``). A new revision: ``alembic -c <an ini naming this folder as
script_location> revision -m "..."``, then write its upgrade and downgrade by hand."""
