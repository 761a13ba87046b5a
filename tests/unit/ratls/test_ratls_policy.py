"""AppraisalPolicy: attest's policy file plus `allowed_model_digests`, failing closed."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from attest.errors import PolicyFormatError
from ratls.policy import AppraisalPolicy

DIGEST = "ab" * 32


def test_the_empty_policy_demands_pins_and_keeps_attests_strict_defaults() -> None:
    policy = AppraisalPolicy()
    assert policy.unsafe_allow_unpinned is False
    assert policy.allowed_model_digests is None
    assert policy.tdx.mr_td is None
    assert policy.tdx.unsafe_allow_debug is False
    assert policy.tdx.allowed_tcb_statuses == ("UpToDate",)
    assert policy.max_certificate_validity == policy.max_certificate_age == timedelta(hours=24)


def test_only_the_named_unsafe_policy_allows_unpinned() -> None:
    assert AppraisalPolicy.unsafe_unpinned().unsafe_allow_unpinned is True
    assert AppraisalPolicy.from_document({"unsafe_allow_unpinned": True}).unsafe_allow_unpinned
    assert AppraisalPolicy().allowing_unpinned_unsafely() == AppraisalPolicy.unsafe_unpinned()


def test_model_digests_and_tdx_fields_load_together() -> None:
    policy = AppraisalPolicy.from_document(
        {"allowed_model_digests": [DIGEST, "cd" * 48], "mr_td": ["00" * 48]})
    assert policy.allowed_model_digests == {bytes.fromhex(DIGEST), bytes.fromhex("cd" * 48)}
    assert policy.tdx.mr_td == (bytes(48),)


def test_empty_allowlist_is_kept_empty_not_unpinned() -> None:
    assert AppraisalPolicy.from_document({"allowed_model_digests": []}).allowed_model_digests == (
        frozenset())


@pytest.mark.parametrize(
    ("document", "check"),
    [
        ({"allowed_model_digests": DIGEST}, "allowed_model_digests"),
        ({"allowed_model_digests": ["xyz"]}, "allowed_model_digests"),
        ({"allowed_model_digests": ["ab" * 19]}, "allowed_model_digests"),
        ({"allowed_model_digests": ["ab" * 65]}, "allowed_model_digests"),
        ({"allowed_model_digest": [DIGEST]}, "allowed_model_digest"),  # a typo is an error
        ({"mr_td": ["00" * 47]}, "mr_td.0"),
        ({"allowed_tcb_statuses": ["OutOfDate"]}, "allowed_tcb_statuses"),
        ({"unsafe_allow_unpinned": "yes"}, "unsafe_allow_unpinned"),
        ({"max_certificate_validity_hours": 0}, "max_certificate_validity_hours"),
        ({"max_certificate_age_hours": True}, "max_certificate_age_hours"),
        ({"max_certificate_age_hours": "24"}, "max_certificate_age_hours"),
        ({"origin": {"method": "x"}}, "origin"),
        ({"origin": {"method": "x", "source": "s", "observed_at": "t", "by": "me"}}, "origin"),
        ({"td_attributes": ["00" * 7]}, "td_attributes.0"),
    ],
)
def test_bad_documents_are_named_errors(document, check) -> None:
    with pytest.raises(PolicyFormatError) as err:
        AppraisalPolicy.from_document(document)
    assert err.value.check == check


def test_toml_and_json_files_load_alike(tmp_path) -> None:
    toml = tmp_path / "p.toml"
    toml.write_text(f'allowed_model_digests = ["{DIGEST}"]\nrtmr2 = ["{"11" * 48}"]\n')
    as_json = tmp_path / "p.json"
    as_json.write_text(json.dumps({"allowed_model_digests": [DIGEST], "rtmr2": ["11" * 48]}))
    assert AppraisalPolicy.load(toml) == AppraisalPolicy.load(as_json)


@pytest.mark.parametrize(("name", "text"), [("p.yaml", "a: 1"), ("p.toml", "= broken"),
                                             ("p.json", "{"), ("missing.toml", None)])
def test_unreadable_policy_files_are_format_errors(tmp_path, name, text) -> None:
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(PolicyFormatError):
        AppraisalPolicy.load(path)


def test_with_model_digests_replaces_the_allowlist() -> None:
    policy = AppraisalPolicy().with_model_digests([bytes(32)])
    assert policy.allowed_model_digests == {bytes(32)}
    assert AppraisalPolicy().allowed_model_digests is None
