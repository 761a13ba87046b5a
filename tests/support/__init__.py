"""Test support shared by several test modules: the fake engine and helpers to run it."""
