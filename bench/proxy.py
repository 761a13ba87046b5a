#!/usr/bin/env python3
"""Proxy overhead: direct to a fast stand-in engine vs through the appliance (RA-TLS, gunicorn,
receipts) vs through nginx (TLS, `proxy_buffering off`), in the same run.

For each target, at concurrency 1 and 64:
  * non-streaming chat completions: p50/p99 latency, and the *added* latency against direct;
  * streams (STAND_IN_EVENTS SSE events each): relayed events/s;
  * the proxy's CPU time per request and per relayed event, from /proc (its whole process tree:
    for the appliance the supervisor, gunicorn's master and workers, never the engine).
Goals (brief): added p50 at concurrency 1 <= 0.5 ms; CPU per relayed event <= 3x nginx's; CPU
per non-streaming request <= 5x nginx's. The machine is shared: run it a few times.

    .venv/bin/python bench/proxy.py [--requests 2000] [--streams 20] [--skip-nginx]

nginx comes from Debian (`apt-get install nginx-light`, done here when missing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

ROOT = Path(__file__).resolve().parent.parent
STAND_IN = ROOT / "bench" / "stand_in_engine.py"
STAND_IN_SETTINGS = ("STAND_IN_EVENTS", "STAND_IN_EVENT_INTERVAL")
EVENTS_PER_STREAM = 200
CHAT = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hello"}],
                   "max_tokens": 16}).encode()
STREAM = json.dumps({"model": "bench", "messages": [{"role": "user", "content": "hello"}],
                     "stream": True}).encode()


# -- processes and CPU accounting ------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields from `state` on


def _task_cpu_ns(pid: int) -> int:
    """On-CPU nanoseconds of all threads of `pid` (schedstat: ns resolution, unlike ticks)."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except OSError:
            continue
    return total


def tree_cpu(root: int, exclude_pgid: int | None = None) -> float:
    """CPU seconds of `root` and its descendants (optionally minus one process group)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) is not None:
            stats[int(entry)] = fields
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        fields = stats.get(pid)
        if fields is None or (exclude_pgid is not None and int(fields[2]) == exclude_pgid):
            continue
        total += _task_cpu_ns(pid)
        stack.extend(children.get(pid, []))
    return total / 1e9


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def start_nginx(work: Path, upstream_port: int, workers: int) -> tuple[subprocess.Popen, int]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        print("bench: installing nginx-light (Debian)", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light"], check=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        nginx = "/usr/sbin/nginx"
    cert, key = self_signed(work)
    port = free_port()
    (work / "nginx.conf").write_text(f"""
worker_processes {workers};
daemon off;
pid {work}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    upstream engine {{
        server 127.0.0.1:{upstream_port}; keepalive 256; keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 1000000;
        location / {{
            proxy_pass http://engine;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
""")
    process = subprocess.Popen([nginx, "-c", str(work / "nginx.conf"), "-p", str(work)])
    wait_port(port)
    return process, port


@dataclass
class Appliance:
    process: subprocess.Popen
    port: int
    engine_pgid: int


def start_appliance(work: Path, workers: int, threads: int) -> Appliance:
    appliance = [sys.executable, "-m", "appliance"]
    source = work / "model-src"
    source.mkdir()
    (source / "config.json").write_text("{}")
    models, roothash = work / "models", work / "roothash"
    subprocess.run([*appliance, "model", "pack", str(source), "--name", "bench", "--models-dir",
                    str(models), "--roothash-dir", str(roothash)], check=True, capture_output=True)
    port, engine_port = free_port(), free_port()
    spawn_log = work / "appliance.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    env["APPLIANCE_LOG_LEVEL"] = "WARNING"
    process = subprocess.Popen(
        [*appliance, "serve", "--tee", "simulated", "--vllm-bin", str(STAND_IN), "--vllm-port",
         str(engine_port), "--listen", f"127.0.0.1:{port}", "--state-dir", str(work / "state"),
         "--models-dir", str(models), "--roothash-dir", str(roothash), "--workers", str(workers),
         "--threads", str(threads), "--insecure-open-lifecycle",
         # The loader gives the engine a clean environment: pass the stand-in's settings.
         *(f"--engine-env={name}={os.environ[name]}" for name in STAND_IN_SETTINGS)],
        env=env, stdout=spawn_log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT,
    )
    wait_port(port)
    context = insecure_client_context()
    with socket.create_connection(("127.0.0.1", port)) as raw, context.wrap_socket(raw) as tls:
        tls.sendall(b"POST /v1/models/load HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\n"
                    b"Content-Length: 17\r\nConnection: close\r\n\r\n{\"model\":\"bench\"}")
        assert b" 202 " in tls.recv(4096).split(b"\r\n", 1)[0] + b" "
    for _ in range(200):  # until the state says ready
        status = raw_get(port, "/v1/models/status")
        if b'"proxy_status":"ready"' in status:
            break
        time.sleep(0.05)
    else:
        raise RuntimeError("the appliance never became ready:\n" + spawn_log.read_text()[-3000:])
    engine_pid = find_pid(str(STAND_IN).encode(), b"--port\0%d\0" % engine_port)
    return Appliance(process, port, os.getpgid(engine_pid))


def find_pid(*needles: bytes) -> int:
    for entry in os.listdir("/proc"):
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes() if entry.isdigit() else b""
        except OSError:
            continue
        if all(needle in command for needle in needles):
            return int(entry)
    raise RuntimeError(f"no process with {needles}")


def raw_get(port: int, path: str) -> bytes:
    context = insecure_client_context()
    with socket.create_connection(("127.0.0.1", port)) as raw, context.wrap_socket(raw) as tls:
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
        return data


def insecure_client_context() -> ssl.SSLContext:
    # The bench measures per-request proxy cost; RA-TLS verification happens once per connection
    # in real clients and is measured by bench/ratls_connect.py.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


# -- load generator --------------------------------------------------------------------------------

async def _read_response(reader: asyncio.StreamReader) -> int:
    """Reads one response; returns the number of SSE events (0 for JSON)."""
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head[:16]:
        raise RuntimeError(f"bad response: {head[:200]!r}")
    lower = head.lower()
    if b"transfer-encoding: chunked" in lower:
        events = 0
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                return events
            events += data.count(b"\n\n")
    length = int(lower.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    await reader.readexactly(length)
    return 0


async def _connection(port: int, tls: bool, request: bytes, count: int,
                      latencies: list[float]) -> int:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=insecure_client_context() if tls else None, limit=1 << 20)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    events = 0
    for _ in range(count):
        started = time.perf_counter()
        writer.write(request)
        events += await _read_response(reader)
        latencies.append(time.perf_counter() - started)
    writer.close()
    return events


def run_load(port: int, tls: bool, body: bytes, concurrency: int, per_connection: int
             ) -> tuple[list[float], int, float]:
    request = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\n"
               b"Content-Type: application/json"
               b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    latencies: list[float] = []

    async def main() -> int:
        counts = await asyncio.gather(*(_connection(port, tls, request, per_connection, latencies)
                                        for _ in range(concurrency)))
        return sum(counts)

    started = time.perf_counter()
    events = asyncio.run(main())
    return latencies, events, time.perf_counter() - started


# -- the benchmark ---------------------------------------------------------------------------------

@dataclass
class Target:
    name: str
    port: int
    tls: bool
    cpu: callable | None  # () -> CPU seconds of the proxy's process tree


@dataclass
class Figures:
    p50: float
    p99: float
    requests: int
    cpu_per_request: float | None
    events_per_s: float
    cpu_per_event: float | None


def measure(target: Target, concurrency: int, requests: int, streams: int) -> Figures:
    run_load(target.port, target.tls, CHAT, concurrency, max(1, 100 // concurrency))  # warm-up
    per_connection = max(1, requests // concurrency)
    cpu0 = target.cpu() if target.cpu else 0.0
    latencies, _, _ = run_load(target.port, target.tls, CHAT, concurrency, per_connection)
    cpu1 = target.cpu() if target.cpu else 0.0
    stream_count = max(1, streams // concurrency)
    _, events, elapsed = run_load(target.port, target.tls, STREAM, concurrency, stream_count)
    cpu2 = target.cpu() if target.cpu else 0.0
    quantiles = statistics.quantiles(latencies, n=100)
    return Figures(
        p50=statistics.median(latencies), p99=quantiles[98], requests=len(latencies),
        cpu_per_request=(cpu1 - cpu0) / len(latencies) if target.cpu else None,
        events_per_s=events / elapsed,
        cpu_per_event=(cpu2 - cpu1) / events if target.cpu and events else None,
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="non-streaming requests per run")
    parser.add_argument("--streams", type=int, default=20, help="streams at concurrency 1")
    parser.add_argument("--workers", type=int, default=2, help="appliance and nginx workers")
    parser.add_argument("--event-interval", type=float, default=0.001,
                        help="seconds between a stream's events (engine pacing; 0 = unpaced)")
    parser.add_argument("--skip-nginx", action="store_true")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    os.environ["STAND_IN_EVENTS"] = str(EVENTS_PER_STREAM)
    os.environ["STAND_IN_EVENT_INTERVAL"] = str(args.event_interval)
    direct_port = free_port()
    direct = subprocess.Popen(
        [sys.executable, str(STAND_IN), "serve", "m", "--port", str(direct_port)]
    )
    processes: list[subprocess.Popen] = [direct]
    try:
        wait_port(direct_port)
        appliance = start_appliance(work, args.workers, threads=64)
        processes.insert(0, appliance.process)
        targets = [
            Target("direct", direct_port, False, None),
            Target("appliance", appliance.port, True,
                   lambda: tree_cpu(appliance.process.pid, appliance.engine_pgid)),
        ]
        if not args.skip_nginx:
            nginx, nginx_port = start_nginx(work, direct_port, args.workers)
            processes.insert(0, nginx)
            targets.append(Target("nginx", nginx_port, True, lambda: tree_cpu(nginx.pid)))
        results: dict[tuple[str, int], Figures] = {}
        for concurrency in args.concurrency:
            for target in targets:
                results[(target.name, concurrency)] = measure(
                    target, concurrency, args.requests,
                    args.streams if concurrency == 1 else 64 * 4)
        report(results, targets, args.concurrency)
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        if sys.exc_info()[0] is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"bench: kept {work} for inspection", file=sys.stderr)
    return 0


def report(
    results: dict[tuple[str, int], Figures], targets: list[Target], levels: list[int]
) -> None:
    us = 1e6
    print(f"stand-in engine: {EVENTS_PER_STREAM} events per stream, "
          f"{os.environ['STAND_IN_EVENT_INTERVAL']} s apart; times in microseconds")
    print(f"{'target':<10} {'conc':>4} {'p50':>8} {'p99':>8} {'+p50':>8} {'+p99':>8} "
          f"{'cpu/req':>8} {'events/s':>9} {'cpu/event':>9}")
    for concurrency in levels:
        base = results[("direct", concurrency)]
        for target in targets:
            f = results[(target.name, concurrency)]
            cpu_req = (
                f"{f.cpu_per_request * us:8.1f}" if f.cpu_per_request is not None else f"{'-':>8}"
            )
            cpu_ev = f"{f.cpu_per_event * us:9.2f}" if f.cpu_per_event is not None else f"{'-':>9}"
            print(f"{target.name:<10} {concurrency:>4} {f.p50 * us:8.0f} {f.p99 * us:8.0f} "
                  f"{(f.p50 - base.p50) * us:8.0f} {(f.p99 - base.p99) * us:8.0f} {cpu_req} "
                  f"{f.events_per_s:9.0f} {cpu_ev}")
    if any(t.name == "nginx" for t in targets):
        print("ratios appliance / nginx (goals: cpu/request <= 5, cpu/event <= 3; "
              "added p50 at concurrency 1 <= 500 us):")
        for concurrency in levels:
            a, n = results[("appliance", concurrency)], results[("nginx", concurrency)]
            print(f"  concurrency {concurrency}: "
                  f"cpu/request {a.cpu_per_request / n.cpu_per_request:.2f}x, "
                  f"cpu/event {a.cpu_per_event / n.cpu_per_event:.2f}x, "
                  f"added p50 {(a.p50 - results[('direct', concurrency)].p50) * us:.0f} us "
                  f"(nginx {(n.p50 - results[('direct', concurrency)].p50) * us:.0f} us)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
