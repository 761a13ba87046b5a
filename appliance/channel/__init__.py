"""The channel between the supervisor and the API workers.

The control socket and the shared state file.
"""
