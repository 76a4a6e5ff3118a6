"""Alembic environment of the office's store: runs the migrations on the connection the
office hands over (tools/office/store.py migrate), or on sqlalchemy.url from the config."""

from alembic import context
from sqlalchemy import create_engine

from tools.office.schema import Base

config = context.config
target_metadata = Base.metadata


def run():
    conn = config.attributes.get("connection")
    if conn is not None:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    run()
