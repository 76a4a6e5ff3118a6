"""Chip and peripheral drivers: each takes injected bus objects and never creates pins."""
