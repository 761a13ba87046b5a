"""The supervisor process: identity, TEE services, model lifecycle wiring, status push."""
