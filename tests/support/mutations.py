"""A hypothesis strategy for hostile bytes: real samples with a few random edits."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import strategies as st


def mutations_of(samples: Mapping[str, bytes]) -> st.SearchStrategy[bytes]:
    """One of `samples`, with 1-4 random byte sets, inserts, deletions or a truncation."""
    names = sorted(samples)

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        raw = bytearray(samples[draw(st.sampled_from(names))])
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
            offset = draw(st.integers(0, len(raw) - 1))
            if kind == "set":
                raw[offset] = draw(st.integers(0, 255))
            elif kind == "insert":
                raw[offset:offset] = draw(st.binary(min_size=1, max_size=8))
            elif kind == "delete":
                del raw[offset : offset + draw(st.integers(1, 8))]
            else:
                del raw[offset:]
            if not raw:
                break
        return bytes(raw)

    return mutated()
