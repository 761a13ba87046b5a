"""TDX evidence: quote parsing, DCAP verification against collateral, policy, quote providers.

Imports no sibling package.
"""
