"""Collateral fetching over real HTTP on loopback, from a server that replays saved Intel PCS
responses (tests/support/fake_pcs.py); request counts prove what the cache and offline mode do."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx
import pytest
from support.fake_pcs import FakePcs

from attest.collateral_documents import TcbStatus
from attest.errors import CollateralUnavailableError, FormatError
from attest.pcs import (
    CollateralCache,
    CollateralFetcher,
    PckCa,
    PcsClient,
    PcsEndpoint,
)
from attest.verify import DcapVerifier

FMSPC = "90c06f000000"
TCB = "/tdx/certification/v4/tcb"
QE = "/tdx/certification/v4/qe/identity"
PCK_CRL = "/sgx/certification/v4/pckcrl"
ROOT_CRL = "/sgx/certification/v4/rootcacrl"

# Windows of the 2025-12-17 responses (90c06f, platform CA): TCB info until 2026-01-16 06:24:56,
# PCK CRL until 06:20:00, QE identity until 18:48:11, root CA CRL until 2026-04-03.
ALL_VALID = dt.datetime(2026, 1, 10, tzinfo=dt.UTC)
TCB_AND_PCK_CRL_EXPIRED = dt.datetime(2026, 1, 16, 12, tzinfo=dt.UTC)
QE_EXPIRED_TOO = dt.datetime(2026, 1, 17, tzinfo=dt.UTC)


@pytest.fixture
def tinfoil(vectors_dir: Path) -> Path:
    return vectors_dir / "tdx" / "collateral" / "tinfoil-verifier"


@pytest.fixture
def pcs(tinfoil: Path):
    with FakePcs(tinfoil / "2025-12-17") as server:
        yield server


@pytest.fixture
def client(pcs: FakePcs):
    client = PcsClient(PcsEndpoint.pccs(pcs.url), timeout=2.0)
    yield client
    client.close()


@pytest.fixture
def cache(tmp_path: Path) -> CollateralCache:
    return CollateralCache(tmp_path / "cache")


# -- the HTTP client ------------------------------------------------------------------------


def test_client_returns_bodies_verbatim_and_decodes_issuer_chains(client, tinfoil):
    day = tinfoil / "2025-12-17"
    tcb = client.tcb_info(FMSPC)
    qe = client.qe_identity()
    pck = client.pck_crl(PckCa.PLATFORM)
    root = client.root_ca_crl()

    assert tcb.body == (day / f"tcb_info_{FMSPC}.json").read_bytes()
    assert qe.body == (day / "qe_identity.json").read_bytes()
    assert pck.body == (day / "pck_crl_platform.crl").read_bytes()  # encoding=der asked for
    assert root.body == (day / "root_ca.crl").read_bytes().hex().encode()  # PCCS: hex
    for response in (tcb, qe, pck):
        assert response.issuer_chain.startswith("-----BEGIN CERTIFICATE-----\n")
        assert response.issuer_chain.count("-----BEGIN CERTIFICATE-----") == 2
        assert "%" not in response.issuer_chain
    assert root.issuer_chain is None
    assert tcb.url == f"{client.endpoint.base_url}{TCB}?fmspc={FMSPC}"


def test_intel_endpoint_urls():
    intel = PcsEndpoint.intel()
    assert intel.tcb_info_url(FMSPC) == (
        "https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=90c06f000000"
    )
    assert intel.pck_crl_url(PckCa.PROCESSOR) == (
        "https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=processor&encoding=der"
    )
    assert (
        intel.root_ca_crl_url == "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"
    )


def test_http_error_names_url_and_status(client, pcs):
    with pytest.raises(CollateralUnavailableError) as caught:
        client.tcb_info("112233445566")
    assert caught.value.check == "pcs http status"
    assert (caught.value.expected, caught.value.actual) == (200, 404)
    assert f"{pcs.url}{TCB}?fmspc=112233445566 answered HTTP 404" in str(caught.value)

    pcs.fail[QE] = 503
    with pytest.raises(CollateralUnavailableError, match=r"answered HTTP 503 .injected failure."):
        client.qe_identity()


def test_unreachable_server_is_collateral_unavailable(pcs):
    # A port nobody listens on: take the fake server's, after it has stopped.
    url = pcs.url
    pcs.__exit__()
    client = PcsClient(PcsEndpoint.pccs(url), timeout=2.0)
    with pytest.raises(CollateralUnavailableError, match=f"cannot fetch {url}{QE}: ConnectError"):
        client.qe_identity()


def test_slow_server_times_out(pcs):
    pcs.delay_seconds = 1.0
    client = PcsClient(PcsEndpoint.pccs(pcs.url), timeout=0.2)
    with pytest.raises(CollateralUnavailableError, match="ReadTimeout"):
        client.qe_identity()


def test_missing_issuer_chain_header_is_refused(client, pcs):
    pcs.omit_chain_headers = True
    with pytest.raises(CollateralUnavailableError) as caught:
        client.tcb_info(FMSPC)
    assert caught.value.check == "pcs issuer chain header"


def test_oversized_response_is_refused(client, pcs):
    pcs.oversize = True
    with pytest.raises(CollateralUnavailableError, match="sent more than"):
        client.qe_identity()


def test_caller_supplied_http_client_is_used(pcs):
    seen = []
    http = httpx.Client(event_hooks={"request": [lambda request: seen.append(str(request.url))]})
    PcsClient(PcsEndpoint.pccs(pcs.url), http=http).qe_identity()
    assert seen == [f"{pcs.url}{QE}"]


# -- the fetcher and its cache --------------------------------------------------------------


def test_cold_cache_fetches_everything_once_then_serves_from_disk(client, cache, pcs):
    fetcher = CollateralFetcher(client, cache)

    collateral = fetcher.collateral(FMSPC, PckCa.PLATFORM, now=ALL_VALID)
    assert pcs.total_requests == 4
    assert collateral.identity.fmspc == FMSPC
    assert collateral.pck_crl.issuer_cn == "Intel SGX PCK Platform CA"

    again = fetcher.collateral(FMSPC, "platform", now=ALL_VALID + dt.timedelta(days=3))
    assert pcs.total_requests == 4
    assert again.to_bundle_json() == collateral.to_bundle_json()

    # A new process (new fetcher, same directory) also starts warm.
    CollateralFetcher(client, CollateralCache(cache.directory)).collateral(
        bytes.fromhex(FMSPC), PckCa.PLATFORM, now=ALL_VALID
    )
    assert pcs.total_requests == 4


def test_fetched_collateral_matches_the_assembled_vector_bundle(client, cache, vectors_dir):
    collateral = CollateralFetcher(client, cache).collateral(FMSPC, PckCa.PLATFORM, now=ALL_VALID)
    bundle = json.loads((vectors_dir / "tdx/assembled/tinfoil_90c06f_2025-12.json").read_text())
    mine = json.loads(collateral.to_bundle_json())
    assert mine == bundle


def test_fetched_collateral_verifies_a_real_quote_against_intels_root(client, cache, vectors_dir):
    quote = (vectors_dir / "tdx/quotes/dstack_verifier_quote-report_v4.bin").read_bytes()
    collateral = CollateralFetcher(client, cache).collateral(FMSPC, PckCa.PLATFORM, now=ALL_VALID)
    result = DcapVerifier().verify(quote, collateral, now=ALL_VALID)
    assert result.tcb_status is TcbStatus.UP_TO_DATE
    assert not result.simulated


def test_each_part_is_refetched_after_its_own_next_update(client, cache, pcs, tinfoil):
    fetcher = CollateralFetcher(client, cache)
    fetcher.collateral(FMSPC, PckCa.PLATFORM, now=ALL_VALID)
    pcs.dataset = tinfoil / "2026-01-12"
    pcs.requests.clear()

    newer = fetcher.collateral(FMSPC, PckCa.PLATFORM, now=TCB_AND_PCK_CRL_EXPIRED)
    assert dict(pcs.requests) == {TCB: 1, PCK_CRL: 1}
    assert newer.identity.tcb_info_issue_date == dt.datetime(2026, 1, 12, 15, 46, 45, tzinfo=dt.UTC)
    assert newer.identity.qe_identity_issue_date.date() == dt.date(2025, 12, 17)

    fetcher.collateral(FMSPC, PckCa.PLATFORM, now=QE_EXPIRED_TOO)
    assert dict(pcs.requests) == {TCB: 1, PCK_CRL: 1, QE: 1}


def test_the_two_pck_cas_are_cached_apart(client, cache, pcs):
    fetcher = CollateralFetcher(client, cache)
    platform = fetcher.collateral(FMSPC, PckCa.PLATFORM, now=ALL_VALID)
    processor = fetcher.collateral(FMSPC, PckCa.PROCESSOR, now=ALL_VALID)
    assert pcs.requests[PCK_CRL] == 2 and pcs.total_requests == 5
    assert platform.pck_crl.issuer_cn == "Intel SGX PCK Platform CA"
    assert processor.pck_crl.issuer_cn == "Intel SGX PCK Processor CA"


def test_offline_mode_never_touches_the_network(client, cache, pcs):
    with pytest.raises(CollateralUnavailableError, match="offline") as caught:
        CollateralFetcher(cache=cache, endpoint=client.endpoint, offline=True).collateral(
            FMSPC, PckCa.PLATFORM, now=ALL_VALID
        )
    assert "tcb-info not cached" in str(caught.value)
    assert pcs.total_requests == 0

    CollateralFetcher(client, cache).collateral(FMSPC, PckCa.PLATFORM, now=ALL_VALID)
    assert pcs.total_requests == 4

    offline = CollateralFetcher(client, cache, offline=True)
    assert offline.collateral(FMSPC, PckCa.PLATFORM, now=ALL_VALID).identity.fmspc == FMSPC
    with pytest.raises(CollateralUnavailableError) as caught:
        offline.collateral(FMSPC, PckCa.PLATFORM, now=TCB_AND_PCK_CRL_EXPIRED)
    assert "tcb-info expired" in str(caught.value) and "pck-crl expired" in str(caught.value)
    assert "qe-identity" not in str(caught.value)
    assert pcs.total_requests == 4


def test_offline_without_cache_is_unavailable():
    with pytest.raises(CollateralUnavailableError, match="not cached"):
        CollateralFetcher(offline=True).collateral(FMSPC, PckCa.PLATFORM, now=ALL_VALID)


def test_http_error_during_fetch_caches_nothing(client, cache, pcs):
    pcs.fail[ROOT_CRL] = 500
    fetcher = CollateralFetcher(client, cache)
    with pytest.raises(CollateralUnavailableError, match="HTTP 500"):
        fetcher.collateral(FMSPC, PckCa.PLATFORM, now=ALL_VALID)
    assert not list(cache.directory.rglob("*.json"))

    del pcs.fail[ROOT_CRL]
    pcs.requests.clear()
    fetcher.collateral(FMSPC, PckCa.PLATFORM, now=ALL_VALID)
    assert pcs.total_requests == 4


def test_damaged_cache_entry_is_fetched_again(client, cache, pcs):
    fetcher = CollateralFetcher(client, cache)
    fetcher.collateral(FMSPC, PckCa.PLATFORM, now=ALL_VALID)
    entry = cache.path(client.endpoint, "qe-identity")
    entry.write_text(entry.read_text()[:40])
    pcs.requests.clear()

    fetcher.collateral(FMSPC, PckCa.PLATFORM, now=ALL_VALID)
    assert dict(pcs.requests) == {QE: 1}


def test_cache_entry_whose_body_no_longer_assembles_triggers_a_full_refetch(client, cache, pcs):
    fetcher = CollateralFetcher(client, cache)
    fetcher.collateral(FMSPC, PckCa.PLATFORM, now=ALL_VALID)
    entry = cache.path(client.endpoint, f"tcb-info-{FMSPC}")
    damaged = json.loads(entry.read_text())
    damaged["body_base64"] = "e30="  # "{}"
    entry.write_text(json.dumps(damaged))
    pcs.requests.clear()

    fetcher.collateral(FMSPC, PckCa.PLATFORM, now=ALL_VALID)
    assert pcs.total_requests == 4


def test_tcb_info_for_another_fmspc_is_refused_and_not_cached(client, cache, pcs):
    pcs.fmspc_alias[FMSPC] = "00a06d080000"
    with pytest.raises(CollateralUnavailableError) as caught:
        CollateralFetcher(client, cache).collateral(FMSPC, PckCa.PLATFORM, now=ALL_VALID)
    assert (caught.value.expected, caught.value.actual) == (FMSPC, "00a06d080000")
    assert not list(cache.directory.rglob("*.json"))


def test_cache_is_scoped_by_endpoint(client, cache, pcs):
    CollateralFetcher(client, cache).collateral(FMSPC, PckCa.PLATFORM, now=ALL_VALID)
    other = PcsEndpoint.pccs("http://127.0.0.1:9")
    with pytest.raises(CollateralUnavailableError, match="not cached"):
        CollateralFetcher(cache=cache, endpoint=other, offline=True).collateral(
            FMSPC, PckCa.PLATFORM, now=ALL_VALID
        )


def test_cache_writes_leave_no_temporary_files(client, cache):
    CollateralFetcher(client, cache).collateral(FMSPC, PckCa.PLATFORM, now=ALL_VALID)
    files = sorted(p.name for p in cache.directory.rglob("*") if p.is_file())
    assert files == sorted(
        [f"tcb-info-{FMSPC}.json", "qe-identity.json", "pck-crl-platform.json", "root-ca-crl.json"]
    )


def test_unusable_cache_directory_only_costs_a_fetch(client, pcs, tmp_path, caplog):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    fetcher = CollateralFetcher(client, CollateralCache(not_a_directory))
    assert fetcher.collateral(FMSPC, PckCa.PLATFORM, now=ALL_VALID).identity.fmspc == FMSPC
    assert "cannot cache" in caplog.text
    fetcher.collateral(FMSPC, PckCa.PLATFORM, now=ALL_VALID)
    assert pcs.total_requests == 8


def test_unknown_pck_ca_is_refused(client, cache, pcs):
    with pytest.raises(FormatError) as caught:
        CollateralFetcher(client, cache).collateral(FMSPC, "intermediate", now=ALL_VALID)
    assert caught.value.check == "pck ca"
    assert pcs.total_requests == 0


@pytest.mark.parametrize("fmspc", ["90c06f", "zz0c06f00000", "90c06f0000000"])
def test_malformed_fmspc_is_refused_before_any_request(client, cache, pcs, fmspc):
    with pytest.raises(FormatError):
        CollateralFetcher(client, cache).collateral(fmspc, PckCa.PLATFORM, now=ALL_VALID)
    assert pcs.total_requests == 0


def test_naive_time_is_refused(client, cache):
    with pytest.raises(ValueError, match="timezone-aware"):
        CollateralFetcher(client, cache).collateral(
            FMSPC, PckCa.PLATFORM, now=dt.datetime(2026, 1, 10)
        )
