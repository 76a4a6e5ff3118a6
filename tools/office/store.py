"""The store: an engine on the database URL (a SQLite file by default, PostgreSQL by
`postgresql+psycopg://...`), its sessions, and the Alembic migrations that make the schema.

    store = Store("sqlite:///office.db"); store.migrate()
    with store.session() as s: ...        # one transaction: committed, or rolled back

SQLite runs in WAL mode with a busy timeout and foreign keys on, so the API and the worker
(threads or processes) share one file; a write transaction starts with BEGIN IMMEDIATE so
that a sale's token id allocation never interleaves with another's.
"""

import contextlib
import os

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, inspect
from sqlalchemy.orm import sessionmaker

MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")
DEFAULT_URL = "sqlite:///office.db"


def normalise_url(url):
    """postgresql:// means psycopg 3 here (the driver the office depends on)."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


class Store:
    def __init__(self, url=DEFAULT_URL, echo=False):
        self.url = normalise_url(url)
        self.sqlite = self.url.startswith("sqlite")
        kw = {}
        if self.sqlite:
            kw["connect_args"] = {"timeout": 30, "check_same_thread": False}
        else:
            kw["pool_pre_ping"] = True
        self.engine = create_engine(self.url, echo=echo, **kw)
        if self.sqlite:
            event.listen(self.engine, "connect", _sqlite_connect)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self, revision="head"):
        """Bring the schema to `revision` (Alembic upgrade); idempotent."""
        cfg = Config()
        cfg.set_main_option("script_location", MIGRATIONS)
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)

    def tables(self):
        return sorted(inspect(self.engine).get_table_names())

    @contextlib.contextmanager
    def session(self):
        """A session in one transaction: committed at the end, rolled back on an error."""
        s = self._factory()
        try:
            with s.begin():
                yield s
        finally:
            s.close()

    def dispose(self):
        self.engine.dispose()


def _sqlite_connect(dbapi_conn, record):
    dbapi_conn.isolation_level = None  # transactions are begun by _sqlite_begin
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")  # a sale answered is a sale kept
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _sqlite_begin(conn):
    conn.exec_driver_sql("BEGIN IMMEDIATE")
