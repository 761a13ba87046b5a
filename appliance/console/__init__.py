"""The fleet console process: receives the appliances' signed status pushes, checks each against
the pushing enclave's RA-TLS certificate and policy, and shows the fleet as JSON."""
