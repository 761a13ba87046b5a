"""The inference engine: kinds, the process group, health."""
