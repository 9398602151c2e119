"""Decisions as pure functions of a snapshot: no I/O, no clock of their own, testable by table."""
