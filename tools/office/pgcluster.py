"""A throwaway PostgreSQL cluster on 127.0.0.1 and a free port, for the tests and the bench.

    with Cluster() as pg:            # initdb in a temporary directory, pg_ctl start
        pg.url("office")             # postgresql+psycopg://... of a fresh database

The server binaries are found on PATH or under /usr/lib/postgresql/<version>/bin (where
Debian's `postgresql` package puts them). initdb refuses to run as root, so as root the
cluster runs as the `postgres` user (made by that package) through setpriv, in a
directory it owns; otherwise as the current user. Clients authenticate by `trust` on
127.0.0.1 only; the unix socket lives in the temporary directory. Unless durable=True
(the bench) fsync and synchronous commit are off: a test cluster outlives no crash. stop() shuts the
server down (fast, then immediate) and removes the directory.
"""

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in "
    "/usr/lib/postgresql/*/bin: install them (Debian/Ubuntu: apt-get install postgresql)"
)


class ClusterError(RuntimeError):
    pass


def find_bindir():
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return os.path.dirname(found)
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(d.split("/")[-2]))
    for d in reversed(dirs):
        if os.access(os.path.join(d, "initdb"), os.X_OK):
            return d
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, bindir=None, durable=False):
        self.bindir = bindir
        self.durable = durable  # False: fsync and synchronous commit off (tests)
        self.dir = None
        self.port = None
        self._as = []  # the command prefix that runs as the cluster's owner
        self.user = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _run(self, *args, check=True):
        cmd = self._as + [os.path.join(self.bindir, args[0]), *args[1:]]
        r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if check and r.returncode:
            raise ClusterError(
                "%s failed (%d):\n%s%s" % (args[0], r.returncode, r.stdout, r.stderr)
            )
        return r

    def start(self):
        self.bindir = self.bindir or find_bindir()
        if self.bindir is None:
            raise ClusterError(INSTALL_HINT)
        self.dir = tempfile.mkdtemp(prefix="pgcluster-")
        if os.getuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            os.chmod(self.dir, 0o700)
            self._as = [
                "setpriv",
                "--reuid=%d" % pw.pw_uid,
                "--regid=%d" % pw.pw_gid,
                "--init-groups",
                "--",
            ]
            self.user = "postgres"
        else:
            self.user = pwd.getpwuid(os.getuid()).pw_name
        data = os.path.join(self.dir, "data")
        self._run(
            "initdb",
            "-D",
            data,
            "-U",
            self.user,
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-instructions",
            "--locale=C",
        )
        with open(os.path.join(data, "postgresql.conf"), "a") as f:
            f.write("max_connections = 50\nshared_buffers = 32MB\n")
            if not self.durable:
                f.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        for attempt in range(3):
            self.port = _free_port()
            opts = "-h 127.0.0.1 -p %d -k %s" % (self.port, self.dir)
            r = self._run(
                "pg_ctl",
                "-D",
                data,
                "-o",
                opts,
                "-l",
                os.path.join(self.dir, "log.txt"),
                "-w",
                "-t",
                "30",
                "start",
                check=False,
            )
            if r.returncode == 0:
                return self
        log = ""
        try:
            with open(os.path.join(self.dir, "log.txt")) as f:
                log = f.read()[-2000:]
        except OSError:
            pass
        self._cleanup()
        raise ClusterError("pg_ctl start failed:\n%s%s%s" % (r.stdout, r.stderr, log))

    def url(self, database=None):
        """The URL of `database` (created when it does not exist), or of `postgres`."""
        if database:
            import psycopg

            with psycopg.connect(
                host="127.0.0.1",
                port=self.port,
                user=self.user,
                dbname="postgres",
                autocommit=True,
            ) as conn:
                if (
                    conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
                    ).fetchone()
                    is None
                ):
                    conn.execute('CREATE DATABASE "%s"' % database.replace('"', ""))
        return "postgresql+psycopg://%s@127.0.0.1:%d/%s" % (
            self.user,
            self.port,
            database or "postgres",
        )

    def stop(self):
        if self.dir is None:
            return
        data = os.path.join(self.dir, "data")
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            r = self._run(
                "pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "20", "stop", check=False
            )
            if r.returncode:
                self._run("pg_ctl", "-D", data, "-m", "immediate", "-w", "stop", check=False)
        self._cleanup()

    def _cleanup(self):
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
