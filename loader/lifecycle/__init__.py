"""The model lifecycle: steps, state machine, load/unload operations."""
