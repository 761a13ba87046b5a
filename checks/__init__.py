"""The error base shared by every package: an error that names the check that failed.

A leaf: it imports nothing of this project, and `attest`, `ratls` and `loader` derive their
error hierarchies from it, so a caller renders any refusal the same way.
"""
