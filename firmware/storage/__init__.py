"""The meter's flash: fixed-size records, the journal ring, the littlefs state files,
settings and key files replaced atomically, line logs, the software's own files.

Imports nothing else of firmware/: every other room may store through it.
"""
