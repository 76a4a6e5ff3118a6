"""The field technician's side: the console on the REPL port, `tech`, the running
meter bound for it, safe mode.

May import every room below it, the app and config.
"""
