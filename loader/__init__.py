"""Model lifecycle: dm-verity hash trees, model images, engine spawning and supervision.

Imports no sibling package.
"""
