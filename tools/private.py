"""Files that hold keys on the host: created with mode 0600 from the first byte, replaced
atomically (write beside, fsync, rename over), never left readable by others."""

import os


class PrivateFileExists(Exception):
    """The file exists and replacing it was not asked for."""


def write_private(path, data, force=False):
    """Write bytes to `path` with mode 0600; an existing file is replaced only with force."""
    path = os.fspath(path)
    if os.path.exists(path) and not force:
        raise PrivateFileExists("%s exists (use --force to replace it)" % path)
    tmp = "%s.tmp%d" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
