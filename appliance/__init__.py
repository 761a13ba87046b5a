"""The service that runs in the confidential VM, and the command line. May import every package."""
