"""NVIDIA GPU evidence (Hopper): the SPDM measurement report a GPU signs, its device
certificate chain to NVIDIA's device identity CA, and the policy over what they show.

Same stages as the TDX side of `attest`: parse (`report`, `opaque`) -> verify (`chain`,
`verify`, with `collateral` for revocation and reference measurements) -> validate (`policy`).
"""
