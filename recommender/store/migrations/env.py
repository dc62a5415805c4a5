"""Alembic's entry point: runs the migrations on the connection ``Database.upgrade`` hands
over (inside its transaction and, on PostgreSQL, its advisory lock)."""

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `nbo db upgrade`, which passes the connection")
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
