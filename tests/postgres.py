"""CPython only: the `postgres` pytest fixture, a throwaway PostgreSQL cluster
(tools/office/pgcluster.py) for the test module, and `fresh_db(pg)` for a new database.

    from postgres import postgres_fixture  # noqa: F401 - the fixture named `postgres`

When the server binaries are missing the fixture FAILS, never skips: CI installs them
(.ci/run), and a run that silently left out the PostgreSQL tests would hide what they
are for.
"""

import itertools

import pytest

from tools.office.pgcluster import INSTALL_HINT, Cluster, ClusterError, find_bindir

_names = itertools.count(1)


@pytest.fixture(scope="module", name="postgres")
def postgres_fixture():
    if find_bindir() is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    c = Cluster()
    try:
        c.start()
    except ClusterError as e:
        pytest.fail(str(e), pytrace=False)
    try:
        yield c
    finally:
        c.stop()


def fresh_db(pg):
    """The URL of a new, empty database on the cluster."""
    return pg.url("office%d" % next(_names))
