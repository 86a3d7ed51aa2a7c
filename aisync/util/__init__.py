"""Leaf utilities shared by every layer: typed errors, name rules, hashing, logging.

Owns: nothing stateful. May import: the standard library and third-party libraries only.
"""
