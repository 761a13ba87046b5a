"""The developer portal process: server-side attestation for a browser."""
