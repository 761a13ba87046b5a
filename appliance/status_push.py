"""The status push's wire contract, shared by its sender (`appliance/supervisor/pusher.py`) and its
receiver (`appliance/console/`): where it goes and the `purpose` its signature is made for.

A push is a ratls signed JSON document (`ratls.signing.sign_json`) with one more member,
`certificate_pem`: the RA-TLS certificate whose key signed it. The payload holds the lifecycle
status (`loaded_model`, `loaded_model_digest`, `proxy_status`, `proxy_progress`, ...) and
`enclave_id`, `time` (ISO 8601 with offset) and `sequence` (per sender process).
"""

from __future__ import annotations

PUSH_PATH = "/api/v1/enclave/runtime-status"
# Inside the signed bytes: a signature made for another kind of message never verifies as a push.
STATUS_PUSH_PURPOSE = "appliance.runtime-status.v1"
# The member beside the signed ones that carries the signer's certificate.
CERTIFICATE_MEMBER = "certificate_pem"
