"""The console from its settings: the registry (read once), a verifier per enclave, the verdict
cache, the store and the app. The clock, the key probe and the verifiers are injectable."""

from __future__ import annotations

from datetime import timedelta

from flask import Flask

from appliance.console.app import ConsoleConfig, create_console_app
from appliance.console.attestation import CertificateAttestor, MakeVerifier, verifier_factory
from appliance.console.intake import Freshness, PushIntake
from appliance.console.key_probe import KeyProbe, TlsKeyProbe
from appliance.console.registry import Registry, load_registry
from appliance.console.settings import ConsoleSettings
from appliance.console.store import ConsoleStore
from ratls.clock import Clock


def build_console_app(settings: ConsoleSettings, *, clock: Clock,
                      registry: Registry | None = None, key_probe: KeyProbe | None = None,
                      make_verifier: MakeVerifier | None = None) -> Flask:
    """Raises RegistryError (registry, policies, roots) and StateStoreError (the database)."""
    registry = registry or load_registry(settings.registry)
    make_verifier = make_verifier or verifier_factory(clock=clock, pccs_url=settings.pccs_url)
    verifiers = {enclave_id: make_verifier(enclave)
                 for enclave_id, enclave in registry.enclaves.items()}
    attestor = CertificateAttestor(verifiers, key_probe or TlsKeyProbe())
    store = ConsoleStore(settings.state_db)
    intake = PushIntake(
        registry=registry, attestor=attestor, store=store,
        freshness=Freshness(max_age=timedelta(seconds=settings.max_push_age),
                            max_skew=timedelta(seconds=settings.max_clock_skew)),
    )
    config = ConsoleConfig(registry=registry, management_token=settings.management_token,
                           max_body_bytes=settings.max_body_bytes)
    return create_console_app(config, intake=intake, store=store, clock=clock,
                              verifiers=verifiers)
