"""Prepaid meter application logic: hardware-free, runs on MicroPython and CPython."""
