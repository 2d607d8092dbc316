"""Load test of `dlforge serve` on loopback: the quickstart's Transformer tweets model, 1, 8 and
64 concurrent clients (each sends one tweet per request, back to back) for a fixed duration,
with dynamic batching on (max batch 64, 5 ms) and off (max batch 1), the server in its own
process. Prints requests/s, p50/p90/p99 latency, errors and the mean batch size (from
/metrics), and the raw model's own batched throughput measured in this process. At the most
clients it also serves with ``--workers 2`` (two processes of one thread each), and speaks the
other protocols of ``--protocols``: ``v1`` (POST /v1/models/m/predict, JSON), ``v2`` (the Open
Inference Protocol's infer, JSON in and out) and ``v2-binary`` (the same with the binary
tensor data extension both ways: what ``tritonclient.http`` sends at its defaults).

The load comes from Debian's ``wrk`` when it is installed (``apt-get install wrk``: a C client
that leaves the CPU to the server), else from an asyncio httpx client in this process (which on
a 2-core machine takes a core itself and caps what the server can show).

    make quickstart   # once: writes runs/quickstart
    .venv/bin/python benchmarks/serve_load.py [--run runs/quickstart] [--duration 30] \
        [--clients 1,8,64] [--protocols v1,v2,v2-binary]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx

from dlforge import load
from dlforge.data.datasets import trump_tweets


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: Path, batch: int, backend: str = "torch",
                 workers: int = 1) -> tuple[subprocess.Popen, str]:
    port = free_port()
    dlforge = str(Path(sys.executable).with_name("dlforge"))
    proc = subprocess.Popen([dlforge, "serve", str(run), "--port", str(port), "--name", "m",
                             "--max-batch-size", str(batch), "--max-delay-ms", "5",
                             "--max-queue", "100000", "--backend", backend,
                             "--workers", str(workers)],
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                if workers > 1:  # one worker answered; give the others time to load the model
                    time.sleep(5)
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start")


def request_for(protocol: str, text: str) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of a one-text request in ``protocol``."""
    if protocol == "v1":
        return ("/v1/models/m/predict", json.dumps({"instances": [{"text": text}]}).encode(),
                {"Content-Type": "application/json"})
    tensor = {"name": "text", "shape": [1], "datatype": "BYTES"}
    if protocol == "v2":
        body = {"inputs": [{**tensor, "data": [text]}]}
        return "/v2/models/m/infer", json.dumps(body).encode(), {}
    if protocol != "v2-binary":
        raise SystemExit(f"--protocols: v1, v2 or v2-binary, got {protocol!r}")
    raw = struct.pack("<I", len(text.encode())) + text.encode()  # BYTES: length, then bytes
    header = json.dumps({"inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return ("/v2/models/m/infer", header + raw,
            {"Inference-Header-Content-Length": str(len(header))})


async def load_test(url: str, texts: list[str], clients: int, duration: float,
                    protocol: str = "v1") -> dict:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + duration

    async def client(i: int, c: httpx.AsyncClient) -> None:
        nonlocal errors
        k = i
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            path, body, headers = request_for(protocol, texts[k % len(texts)])
            try:
                r = await c.post(f"{url}{path}", content=body, headers=headers)
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - t0) if ok else None
            errors += 0 if ok else 1
            k += clients

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*[client(i, c) for i in range(clients)])
        elapsed = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {"rps": len(latencies) / elapsed, "p50": q[49] * 1e3, "p90": q[89] * 1e3,
            "p99": q[98] * 1e3, "errors": errors}


def wrk_test(url: str, texts: list[str], clients: int, duration: float,
             protocol: str = "v1") -> dict:
    """The same load with wrk: one connection per client, one thread, cycling through
    ``texts`` (one per request), so the server sees tweets of every length, as the raw
    model's batches do."""
    import re
    import tempfile

    def lua_string(data: bytes) -> str:
        return '"' + "".join(f"\\{b:03d}" for b in data) + '"'  # any bytes, Lua escapes

    requests = [request_for(protocol, t) for t in texts]
    path = requests[0][0]

    def lua_table(headers: dict[str, str]) -> str:
        return "{" + ", ".join(f"[{json.dumps(k)}] = {json.dumps(v)}"
                               for k, v in headers.items()) + "}"

    script = (
        "local specs = {\n" + ",\n".join(f"{{{lua_table(h)}, {lua_string(b)}}}"
                                         for _, b, h in requests) + "}\n"
        "local reqs, i = {}, 0\n"
        "init = function(args)\n"
        "  for k, s in ipairs(specs) do\n"
        f"    reqs[k] = wrk.format(\"POST\", {json.dumps(path)}, s[1], s[2])\n"
        "  end\n"
        "end\n"
        "request = function()\n  i = i % #reqs + 1\n  return reqs[i]\nend\n")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{int(duration)}s", "--latency",
                          "-s", fh.name, f"{url}{path}"],
                         capture_output=True, text=True, check=True).stdout
    os.unlink(fh.name)

    def ms(label: str) -> float:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {"rps": rps, "p50": ms("50"), "p90": ms("90"), "p99": ms("99"), "errors": errors}


def mean_batch(url: str) -> float:
    count = total = 0.0
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("dlforge_batch_size_count"):
            count += float(line.split()[-1])
        elif line.startswith("dlforge_batch_size_sum"):
            total += float(line.split()[-1])
    return total / count if count else 0.0


def raw_throughput(run: Path, texts: list[str], seconds: float = 5.0) -> float:
    clf = load(run)
    batches = [texts[i:i + 64] for i in range(0, len(texts) - 63, 64)]
    clf.predict_proba(batches[0])  # warm-up
    n, k, t0 = 0, 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:  # cycling through the texts wrk sends
        clf.predict_proba(batches[k % len(batches)])
        n += 64
        k += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", default="runs/quickstart")
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--clients", default="1,8,64")
    ap.add_argument("--workers", type=int, default=2,
                    help="also serve with this many worker processes at the most clients")
    ap.add_argument("--protocols", default="v1,v2-binary",
                    help="the first for every run; the others at the most clients, batching on")
    args = ap.parse_args()
    protocols = args.protocols.split(",")
    for p in protocols:
        request_for(p, "x")  # an unknown name fails here, before any server starts
    run = Path(args.run)
    if not (run / "dlforge.json").is_file():
        sys.exit(f"{run}: no run there; make quickstart writes runs/quickstart")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    texts = trump_tweets()["text"].tolist()[:512]  # wrk and the raw model cycle through these
    raw = raw_throughput(run, texts)
    print(f"raw model, in process, batches of 64: {raw:.1f} texts/s; load from "
          f"{'wrk' if shutil.which('wrk') else 'an asyncio httpx client'}")
    rows = []
    top = max(int(c) for c in args.clients.split(","))
    for clients in [int(c) for c in args.clients.split(",")]:
        # batching on, then off; at the most clients also on with 2 worker processes
        settings = [(64, 1, protocols[0]), (1, 1, protocols[0])]
        if clients == top:
            settings += [(64, 1, p) for p in protocols[1:]]
            settings += [(64, args.workers, protocols[0])] if args.workers > 1 else []
        for batch, workers, protocol in settings:
            proc, url = start_server(run, batch, workers=workers)
            try:
                r = (wrk_test(url, texts, clients, args.duration, protocol)
                     if shutil.which("wrk") else
                     asyncio.run(load_test(url, texts, clients, args.duration, protocol)))
                r["batch"] = mean_batch(url)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
            r.update(clients=clients, batching="on" if batch > 1 else "off", workers=workers,
                     protocol=protocol)
            rows.append(r)
            print(f"{clients:>3} clients, {protocol:<9}, batching {r['batching']:<3}, {workers} "
                  f"worker{'s' if workers > 1 else ' '}: {r['rps']:8.1f} req/s, "
                  f"p50 {r['p50']:7.1f} ms, p90 {r['p90']:7.1f} ms, p99 {r['p99']:7.1f} ms, "
                  f"errors {r['errors']}, mean batch {r['batch']:.1f}", flush=True)
    # Single-request latency: the onnx backend against the torch one (1 client, batching on).
    for backend in ("onnx",):
        proc, url = start_server(run, 64, backend)
        try:
            r = (wrk_test(url, texts, 1, args.duration) if shutil.which("wrk")
                 else asyncio.run(load_test(url, texts, 1, args.duration)))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        torch_row = next(x for x in rows if x["clients"] == min(y["clients"] for y in rows)
                         and x["batching"] == "on")
        print(f"  1 client, backend {backend}: {r['rps']:8.1f} req/s, p50 {r['p50']:7.1f} ms, "
              f"p99 {r['p99']:7.1f} ms (torch: p50 {torch_row['p50']:.1f} ms, p99 "
              f"{torch_row['p99']:.1f} ms)", flush=True)
    # Again at the end: on a shared machine the model's own speed drifts during the runs.
    before, after = raw, raw_throughput(run, texts)
    raw = (before + after) / 2
    print(f"raw model again: {after:.1f} texts/s; the ratios use the mean, {raw:.1f}")
    on = next(r for r in rows if r["clients"] == top and r["batching"] == "on"
              and r["workers"] == 1)
    off = next(r for r in rows if r["clients"] == top and r["batching"] == "off")
    print(f"\nat {top} clients: batching on / off = {on['rps'] / off['rps']:.2f}x (target >= 4), "
          f"errors {on['errors']}; served / raw model = {on['rps'] / raw:.0%} with one "
          f"process, {on['protocol']} (target >= 70%)")
    for r in rows:
        if r["clients"] == top and r["workers"] == 1 and r["protocol"] != on["protocol"]:
            print(f"  {r['protocol']}: {r['rps']:.1f} req/s, served / raw model = "
                  f"{r['rps'] / raw:.0%}, errors {r['errors']}")
    many = [r for r in rows if r["clients"] == top and r["workers"] > 1]
    for r in many:
        print(f"  with --workers {r['workers']}: {r['rps']:.1f} req/s, served / raw model = "
              f"{r['rps'] / raw:.0%}, errors {r['errors']}")


if __name__ == "__main__":
    main()
