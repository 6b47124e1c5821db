"""Alembic's entry point: migrate the database of DATABASE_URL (or the URL the app passes) under a lock."""

from __future__ import annotations

import logging

from alembic import context

from core.schema import locked_connection
from core.settings import from_environment
from models import Base

config = context.config
database_url = config.attributes.get("database_url")
if database_url is None:  # the `alembic` command line: say what it does
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    database_url = from_environment().database_url

if context.is_offline_mode():
    context.configure(url=database_url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    with locked_connection(database_url) as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                          transactional_ddl=True)
        context.run_migrations()
