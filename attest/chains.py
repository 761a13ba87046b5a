"""Steps 1-5 of DCAP verification (`attest.verify`): everything that chains to the trust root.

The root CA CRL, the issuer chains and signatures of the TCB info, the QE identity and the PCK
CRL, and the quote's PCK certificate chain. What does not depend on the quote or the time (the
collateral's signing certificates and signatures, CA certificates verified against the root, the
PCK CRL's issuer) is cached per `ChainChecker`; validity at `now` and revocation are checked on
every call (`attest.validity`).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from cryptography import x509

from attest.certs import load_certificate, load_pck_leaf
from attest.collateral import CertificateChain, Collateral, RevocationList
from attest.errors import (
    CertificateError,
    CertificateValidityError,
    CollateralMismatchError,
    CollateralSignatureError,
)
from attest.quote import Quote
from attest.roots import TrustRoot
from attest.signatures import crl_signed_by, issued_by, raw_signature_valid
from attest.strict_json import format_utc_time
from attest.validity import require_not_revoked, require_valid_at, valid_at, validity_windows

PCK_CHAIN_LENGTH = 3


@dataclass(frozen=True)
class CheckedCollateral:
    """The time-independent results of steps 2 and 3 for one collateral: the signing
    certificates (issued by the root) whose keys verify the TCB info and the QE identity."""

    tcb_signers: tuple[x509.Certificate, ...]
    qe_signers: tuple[x509.Certificate, ...]


_K = TypeVar("_K")
_V = TypeVar("_V")


class LruCache(Generic[_K, _V]):
    """A small thread-safe LRU map: the caches of time-independent results."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[_K, _V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: _K) -> _V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: _K, value: _V) -> None:
        with self._lock:
            self._data[key] = value
            while len(self._data) > self._size:
                self._data.popitem(last=False)


class ChainChecker:
    """Certificate chains, CRLs and collateral signatures against one trust root.

    Safe to share between threads; keeps at most `cache_size` entries per cache.
    """

    def __init__(self, root: TrustRoot, cache_size: int) -> None:
        self._root = root
        self._checked_collaterals: LruCache[Collateral, CheckedCollateral] = LruCache(cache_size)
        # CA DER -> x509.Certificate issued by the root
        self._pck_cas: LruCache[bytes, x509.Certificate] = LruCache(cache_size)
        # (Collateral, CA DER) -> True
        self._pck_crl_issuers: LruCache[tuple[Collateral, bytes], bool] = LruCache(cache_size)

    def checked_collateral(self, collateral: Collateral) -> CheckedCollateral:
        """Steps 1, 2, 3 and 5 as far as they do not depend on the quote or the time."""
        checked = self._checked_collaterals.get(collateral)
        if checked is not None:
            return checked
        root = self._root.certificate
        # 1. The root CA CRL is the root's.
        if collateral.root_ca_crl.issuer != root.subject or not crl_signed_by(
            collateral.root_ca_crl, root
        ):
            raise CollateralSignatureError(
                "root CA CRL is not signed by the trust root",
                check="root_ca_crl.signature",
                expected=root.subject.rfc4514_string(),
                actual=collateral.root_ca_crl.issuer.rfc4514_string(),
            )
        # 2, 3. Signing certificates issued by the root that verify the signed text.
        tcb_signers = tuple(
            cert
            for cert in self._root_issued(collateral.tcb_info_issuer_chain, "tcb_info_issuer_chain")
            if raw_signature_valid(
                cert.public_key(), collateral.tcb_info.signature, collateral.tcb_info.text.encode()
            )
        )
        if not tcb_signers:
            raise CollateralSignatureError(
                "TCB info signature does not verify", check="tcb_info_signature"
            )
        qe_signers = tuple(
            cert
            for cert in self._root_issued(
                collateral.qe_identity_issuer_chain, "qe_identity_issuer_chain"
            )
            if raw_signature_valid(
                cert.public_key(),
                collateral.qe_identity.signature,
                collateral.qe_identity.text.encode(),
            )
        )
        if not qe_signers:
            raise CollateralSignatureError(
                "QE identity signature does not verify", check="qe_identity_signature"
            )
        # 5. The PCK CRL verifies with a CA of its own issuer chain (which ends in the root);
        # that this CA is also the quote's PCK CA is checked per quote.
        if not any(
            cert.subject == collateral.pck_crl.issuer and crl_signed_by(collateral.pck_crl, cert)
            for cert in self._root_issued(collateral.pck_crl_issuer_chain, "pck_crl_issuer_chain")
        ):
            raise CollateralSignatureError(
                "PCK CRL signature does not verify with its issuer chain", check="pck_crl.signature"
            )
        checked = CheckedCollateral(tcb_signers, qe_signers)
        self._checked_collaterals.put(collateral, checked)
        return checked

    def require_pck_crl_of(
        self, collateral: Collateral, pck_ca: x509.Certificate, ca_der: bytes
    ) -> None:
        """5. The collateral's PCK CRL is issued by this CA: same name, signed by its key."""
        if self._pck_crl_issuers.get((collateral, ca_der)):
            return
        crl = collateral.pck_crl
        if crl.issuer != pck_ca.subject or not crl_signed_by(crl, pck_ca):
            raise CollateralMismatchError(
                "PCK CRL is not from the PCK certificate's CA",
                check="pck_crl.issuer",
                expected=pck_ca.subject.rfc4514_string(),
                actual=crl.issuer.rfc4514_string(),
            )
        self._pck_crl_issuers.put((collateral, ca_der), True)

    def current_signer(
        self,
        signers: tuple[x509.Certificate, ...],
        collateral: Collateral,
        now: datetime,
        what: str,
    ) -> x509.Certificate:
        """A signing certificate valid at `now` and not revoked (step 2 and 3)."""
        for signer in signers:
            if valid_at(signer, now):
                require_not_revoked(signer, collateral.root_ca_crl, what)
                return signer
        raise CertificateValidityError(
            f"{what}: no signing certificate valid at the given time",
            check=f"{what}.validity",
            expected=validity_windows(signers),
            actual=format_utc_time(now),
        )

    def pck_chain(
        self, quote: Quote, root_crl: RevocationList, now: datetime
    ) -> tuple[x509.Certificate, x509.Certificate]:
        """4. The quote's [leaf, CA, root] chain; returns (leaf, CA)."""
        chain = quote.pck_cert_chain
        if len(chain) != PCK_CHAIN_LENGTH:
            raise CertificateError(
                "PCK chain must be [PCK leaf, PCK CA, root]",
                check="pck_chain.length",
                expected=PCK_CHAIN_LENGTH,
                actual=len(chain),
            )
        leaf_der, ca_der, root_der = chain
        if root_der != self._root.der:
            raise CertificateError(
                "PCK chain does not end in the trust root",
                check="pck_chain.root",
                expected=self._root.sha256,
                actual=hashlib.sha256(root_der).hexdigest(),
            )
        pck_ca = self._verified_ca(ca_der)
        leaf = load_pck_leaf(leaf_der, parse_names=False)
        if not issued_by(leaf, pck_ca):
            raise CertificateError(
                "PCK leaf is not issued by the PCK CA",
                check="pck_leaf.signature",
                expected=f"issued by {pck_ca.subject.rfc4514_string()}",
            )
        require_valid_at(pck_ca, now, "pck_ca")
        require_valid_at(leaf, now, "pck_leaf")
        require_not_revoked(pck_ca, root_crl, "pck_ca")
        return leaf, pck_ca

    def _root_issued(self, chain: CertificateChain, what: str) -> tuple[x509.Certificate, ...]:
        """The certificates of an issuer chain, which must be [issued by the root..., root]."""
        if chain.der[-1] != self._root.der:
            raise CollateralSignatureError(
                f"{what} does not end in the trust root",
                check=what,
                expected=self._root.sha256,
                actual=hashlib.sha256(chain.der[-1]).hexdigest(),
            )
        certificates = chain.certificates[:-1]
        if not certificates:
            raise CollateralSignatureError(f"{what} has no signing certificate", check=what)
        for certificate in certificates:
            if not issued_by(certificate, self._root.certificate):
                raise CollateralSignatureError(
                    f"{what}: certificate not issued by the trust root",
                    check=what,
                    actual=certificate.subject.rfc4514_string(),
                )
        return certificates

    def _verified_ca(self, der: bytes) -> x509.Certificate:
        """A PCK CA certificate issued by the root and marked as a CA (cached by DER)."""
        cached = self._pck_cas.get(der)
        if cached is not None:
            return cached
        try:
            certificate = load_certificate(der)
        except ValueError as exc:
            raise CertificateError(
                "PCK CA certificate is malformed", check="pck_ca", actual=str(exc)
            ) from None
        if not issued_by(certificate, self._root.certificate):
            raise CertificateError(
                "PCK CA is not issued by the trust root",
                check="pck_ca.signature",
                expected=self._root.certificate.subject.rfc4514_string(),
                actual=certificate.issuer.rfc4514_string(),
            )
        try:
            is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise CertificateError(
                "PCK CA certificate is not a CA",
                check="pck_ca.basic_constraints",
                expected="CA:TRUE",
                actual="CA:FALSE",
            )
        self._pck_cas.put(der, certificate)
        return certificate
