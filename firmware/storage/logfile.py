"""Append-only line logs on the filesystem: the technician audit log and the crash log.

    log = LineLog("audit.log", max_bytes=16384)
    log.append('{"t": "2026-12-01T10:00:00", ...}')
    log.tail(20)  # the newest 20 lines, oldest first, across the rotation

Lines are only ever appended (a littlefs append is committed whole on close, so a power
cut keeps the log up to the previous line). When the file would pass `max_bytes` it is
renamed to `<path>.1` (replacing the older one) and a new file begins, so the log takes
at most twice `max_bytes` of flash and keeps at least `max_bytes` of the newest lines.
Appending never raises: a full or failing filesystem must not stop the caller (the
meter); the failure is counted in `failures` instead.
"""

import os


class LineLog:
    def __init__(self, path, max_bytes=16384):
        self.path = path
        self.max_bytes = max_bytes
        self.failures = 0

    def _size(self, path):
        try:
            return os.stat(path)[6]
        except OSError:
            return -1

    def append(self, line):
        """Add one line (a newline is appended; newlines inside are replaced)."""
        data = line.replace("\n", " ") + "\n"
        try:
            size = self._size(self.path)
            if size > 0 and size + len(data) > self.max_bytes:
                old = self.path + ".1"
                try:
                    os.remove(old)
                except OSError:
                    pass
                os.rename(self.path, old)
            with open(self.path, "a") as f:
                f.write(data)
            return True
        except Exception:
            self.failures += 1
            return False

    def _lines(self, path):
        try:
            with open(path) as f:
                return [x.rstrip("\n") for x in f if x.strip()]
        except OSError:
            return []

    def tail(self, n=20):
        """The newest n lines, oldest first (from the rotated copy when needed)."""
        lines = self._lines(self.path)
        if len(lines) < n:
            lines = self._lines(self.path + ".1") + lines
        return lines[-n:] if n > 0 else []
