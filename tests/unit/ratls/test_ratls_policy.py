"""AppraisalPolicy: attest's policy file plus the served models' digests, failing closed."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from attest.errors import PolicyFormatError
from ratls.errors import ModelDigestError
from ratls.policy import AppraisalPolicy
from ratls.served_models import ServedModel

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


# -- The served models: allowlist and required digests -------------------------------------------

ALPHA = ServedModel("alpha", bytes.fromhex("a1" * 32))
BETA = ServedModel("beta", bytes.fromhex("b2" * 48))
GAMMA = ServedModel("gamma", bytes.fromhex("c3" * 64))
SERVED = (ALPHA, BETA, GAMMA)


def policy(allowed=None, required=None) -> AppraisalPolicy:
    document = {}
    if allowed is not None:
        document["allowed_model_digests"] = [m.digest.hex() for m in allowed]
    if required is not None:
        document["required_model_digests"] = [m.digest.hex() for m in required]
    return AppraisalPolicy.from_document(document)


def outcomes(checks) -> dict[str, str]:
    return {c.name: c.outcome.value for c in checks}


def test_required_model_digests_load_from_the_file() -> None:
    loaded = AppraisalPolicy.from_document({"required_model_digests": [DIGEST]})
    assert loaded.required_model_digests == {bytes.fromhex(DIGEST)}
    assert loaded.allowed_model_digests is None
    assert AppraisalPolicy().required_model_digests is None
    assert AppraisalPolicy().with_required_model_digests([bytes(32)]).required_model_digests == {
        bytes(32)}


@pytest.mark.parametrize("value", [DIGEST, ["xyz"], ["ab" * 19], [1]])
def test_bad_required_model_digests_are_named_errors(value) -> None:
    with pytest.raises(PolicyFormatError) as err:
        AppraisalPolicy.from_document({"required_model_digests": value})
    assert err.value.check == "required_model_digests"


@pytest.mark.parametrize(
    ("allowed", "required", "served", "expected"),
    [
        (None, None, SERVED, {"model_digests": "not_pinned"}),
        (None, None, (ALPHA,), {"model_digest": "not_pinned"}),
        (None, None, (), {"model_digest": "not_pinned"}),
        (SERVED, None, SERVED, {"model_digests": "passed"}),
        ((ALPHA, BETA, GAMMA, ServedModel("x", bytes(20))), (), SERVED,
         {"model_digests": "passed", "required_model_digests": "passed"}),
        (None, (GAMMA, ALPHA), SERVED,
         {"model_digests": "not_pinned", "required_model_digests": "passed"}),
        ((ALPHA,), (ALPHA,), (ALPHA,),
         {"model_digest": "passed", "required_model_digests": "passed"}),
        # Names are not compared: a digest served under another name is the same image.
        ((ServedModel("renamed", ALPHA.digest),), None, (ALPHA,), {"model_digest": "passed"}),
    ],
    ids=["unpinned_several", "unpinned_one", "unpinned_none", "allowed_exactly",
         "allowed_superset_nothing_required", "required_subset", "one_model_both",
         "names_not_compared"],
)
def test_served_models_that_the_policy_accepts(allowed, required, served, expected) -> None:
    assert outcomes(policy(allowed, required).validate_models(served)) == expected


@pytest.mark.parametrize(
    ("allowed", "required", "served", "check", "expected"),
    [
        ((ALPHA, GAMMA), None, SERVED, "model_digests", {"model_digests": "failed"}),
        ((), None, SERVED, "model_digests", {"model_digests": "failed"}),
        (SERVED, None, (), "model_digest", {"model_digest": "failed"}),
        ((BETA,), None, (ALPHA,), "model_digest", {"model_digest": "failed"}),
        (SERVED, (ALPHA, ServedModel("x", bytes(20))), SERVED, "required_model_digests",
         {"model_digests": "passed", "required_model_digests": "failed"}),
        (None, (ALPHA,), (), "required_model_digests",
         {"model_digest": "not_pinned", "required_model_digests": "failed"}),
        ((ALPHA,), (BETA,), SERVED, "model_digests",  # the first failure decides; both listed
         {"model_digests": "failed", "required_model_digests": "passed"}),
    ],
    ids=["one_of_three_disallowed", "empty_allowlist", "no_model_under_allowlist",
         "one_model_disallowed", "required_not_served", "required_but_nothing_served",
         "first_failure_decides"],
)
def test_served_models_that_the_policy_refuses(allowed, required, served, check,
                                               expected) -> None:
    with pytest.raises(ModelDigestError) as err:
        policy(allowed, required).validate_models(served)
    assert err.value.check == check and err.value.stage == "validate"
    assert outcomes(err.value.checks) == expected


def test_a_refusal_names_the_models_and_digests_at_fault() -> None:
    with pytest.raises(ModelDigestError) as err:
        policy((ALPHA,), None).validate_models(SERVED)
    assert "beta" in str(err.value) and "gamma" in str(err.value) and "alpha" not in str(err.value)
    assert err.value.expected == f"[{ALPHA.digest.hex()}]"
    assert err.value.actual == "[" + ", ".join(m.digest.hex() for m in SERVED) + "]"
    with pytest.raises(ModelDigestError) as err:
        policy(None, (ALPHA, BETA, GAMMA, ServedModel("x", bytes(20)))).validate_models((BETA,))
    assert str(err.value).startswith(
        "required model digests are not served: "
        f"{bytes(20).hex()}, {ALPHA.digest.hex()}, {GAMMA.digest.hex()} (")
