"""The channel between the supervisor and the API workers: the control socket and the shared state file."""
