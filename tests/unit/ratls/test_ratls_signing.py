"""Canonical JSON (RFC 8785 vectors + properties) and signed JSON documents."""

from __future__ import annotations

import json
import math
import re
import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from support.ratls_unit_fixtures import *  # noqa: F403 - fixtures

from ratls.errors import SignatureError
from ratls.issuer import IdentityIssuer
from ratls.signing import canonical_json, sign_bytes, sign_json, verify_bytes, verify_json

# RFC 8785 section 3.2.2 / 3.2.3 examples (the input is JSON text, parsed by Python's json).
RFC8785_EXAMPLES = [
    (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}',
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
    ),
    (
        '{"\\u20ac": "Euro Sign", "\\r": "Carriage Return", "\\ufb33": "Hebrew Letter Dalet With'
        ' Dagesh", "1": "One", "\\ud83d\\ude00": "Emoji: Grinning Face", "\\u0080": "Control",'
        ' "\\u00f6": "Latin Small Letter O With Diaeresis"}',
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control","ö":"Latin Small Letter O With'
        ' Diaeresis","€":"Euro Sign","😀":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With'
        ' Dagesh"}',
    ),
]

# RFC 8785 appendix B: IEEE-754 bit patterns and their canonical text.
RFC8785_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("text", "expected"), RFC8785_EXAMPLES)
def test_rfc8785_examples(text: str, expected: str) -> None:
    assert canonical_json(json.loads(text)) == expected.encode("utf-8")


@pytest.mark.parametrize(("bits", "expected"), RFC8785_NUMBERS)
def test_rfc8785_number_serialisation(bits: str, expected: str) -> None:
    value = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert canonical_json(value) == expected.encode("ascii")


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, {1: "x"}, "\ud800", b"bytes", {"a": object()}]
)
def test_values_without_a_canonical_form_are_refused(value) -> None:
    with pytest.raises(ValueError):
        canonical_json(value)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def same_json(parsed, original) -> bool:
    """JSON equality: a float and the integer text that denotes the same double are equal."""
    if isinstance(original, float):
        return isinstance(parsed, int | float) and float(parsed) == original
    if isinstance(original, dict):
        return parsed.keys() == original.keys() and all(
            same_json(parsed[k], v) for k, v in original.items()
        )
    if isinstance(original, list):
        return len(parsed) == len(original) and all(map(same_json, parsed, original))
    return parsed == original and type(parsed) is type(original)


@given(json_values)
@example({"k": ": ", "l": ["\n"]})  # whitespace inside strings is content
def test_canonical_json_parses_back_to_the_same_value(value) -> None:
    text = canonical_json(value).decode("utf-8")
    assert same_json(json.loads(text), value)
    assert canonical_json(json.loads(text)) == text.encode("utf-8")  # idempotent
    # No insignificant whitespace: none is left once the string literals are taken out.
    assert not re.search(r"\s", re.sub(r'"(?:[^"\\]|\\.)*"', '""', text))


@given(st.dictionaries(st.text(), st.integers(), min_size=2, max_size=8))
def test_members_are_sorted_by_utf16_code_units(value) -> None:
    keys = list(json.loads(canonical_json(value)))
    assert keys == sorted(keys, key=lambda k: k.encode("utf-16-be", "surrogatepass"))


@pytest.fixture
def identity(provider, names, clock):
    return IdentityIssuer(provider, names, clock=clock).current()


def test_signature_is_raw_r_s_and_verifies(identity) -> None:
    signature = sign_bytes(identity.private_key, b"message")
    assert len(signature) == 64
    public_key = identity.private_key.public_key()
    verify_bytes(public_key, b"message", signature)
    with pytest.raises(SignatureError):
        verify_bytes(public_key, b"messagE", signature)
    with pytest.raises(SignatureError) as err:
        verify_bytes(public_key, b"message", signature[:63])
    assert err.value.check == "signature"


STATUS = {"loaded_model": "qwen", "proxy_status": "ready", "proxy_progress": 1.0, "time": 1}


def test_signed_json_round_trip(identity) -> None:
    cert = identity.certificate.certificate
    document = sign_json(
        STATUS, purpose="appliance.status.v1", private_key=identity.private_key, certificate=cert
    )
    # It survives a trip through any JSON encoder (whitespace, member order do not matter).
    document = json.loads(json.dumps(document, indent=2, sort_keys=False))
    assert verify_json(document, purpose="appliance.status.v1", certificate=cert) == STATUS


@pytest.mark.parametrize(
    ("mutate", "check"),
    [
        (lambda d: d["payload"].update(proxy_status="error"), "signature"),
        (lambda d: d["payload"].update(extra=1), "signature"),
        (lambda d: d.update(purpose="appliance.receipt.v1"), "purpose"),
        (lambda d: d.update(certificate_sha256="00" * 32), "certificate_sha256"),
        (lambda d: d.update(signature="00" * 64), "signature"),
        (lambda d: d.update(signature="zz"), "signature"),
        (lambda d: d.pop("purpose"), "members"),
        (lambda d: d.update(extra=1), "members"),
    ],
)
def test_signed_json_mutations_are_rejected(identity, mutate, check) -> None:
    cert = identity.certificate.certificate
    document = sign_json(
        STATUS, purpose="appliance.status.v1", private_key=identity.private_key, certificate=cert
    )
    document = json.loads(json.dumps(document))
    mutate(document)
    with pytest.raises(SignatureError) as err:
        verify_json(document, purpose="appliance.status.v1", certificate=cert)
    assert err.value.check == check


def test_signed_json_from_another_key_is_rejected(identity, provider, names, clock) -> None:
    other = IdentityIssuer(provider, names, clock=clock).current()
    document = sign_json(
        STATUS,
        purpose="p",
        private_key=other.private_key,
        certificate=identity.certificate.certificate,
    )
    with pytest.raises(SignatureError) as err:
        verify_json(document, purpose="p", certificate=identity.certificate.certificate)
    assert err.value.check == "signature"
