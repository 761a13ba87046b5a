"""The API worker process.

RA-TLS HTTP serving, the inference proxy, receipts, and the Flask routes.
"""
