"""OpenPAYGO Token: its decoder, the fast chain walk, its key file and its part of the
credit path. Loaded only when the key file opaygo.key is installed.
"""
