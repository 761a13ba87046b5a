"""RA-TLS: certificates that carry a TDX quote, a rotating server context, verifying clients.

Imports `attest` only.
"""
