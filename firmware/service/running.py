"""The meter that is running: what start-up binds for the technician's calls.

Start-up sets these before the loop starts; firmware/service/tech.py reads them when a
technician first calls it, so `tech` (and its code) need not be in the heap until then.
In safe mode nothing is bound and `tech` says the meter is not running.
"""

app = None  # firmware.app.App
settings_path = None  # the settings file (the audit log lives beside it)
restart = None  # resets the board
audit_path = None  # None: audit.log beside the settings file


def bind(app_, settings_path_=None, restart_=None, audit_path_=None):
    global app, settings_path, restart, audit_path
    app = app_
    settings_path = settings_path_
    restart = restart_
    audit_path = audit_path_
