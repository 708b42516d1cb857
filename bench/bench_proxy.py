"""Benchmark: the guard proxy against the real floor, in one interleaved run.

Everything runs on loopback in separate processes: the fake OpenAI upstream (aiohttp), a
bare pass-through proxy (a raw ASGI app on uvicorn with uvloop + httptools and a pooled
aiohttp client: no parsing, no checks), and the guard proxy (`guardrails serve`, the shipped
`default` policy with its classifier, API keys) with the audit log off, on SQLite and on
PostgreSQL. ``wrk`` drives each target with the same connections, threads and duration;
targets are measured in rounds, alternating, so drift on a shared machine hits all of them.
For 1 and 2 workers, streaming and not, it prints requests/s, p50/p99, the ratio to the
bare proxy, and the latency added at one connection against calling the upstream directly.

    .venv/bin/python bench/bench_proxy.py
    .venv/bin/python bench/bench_proxy.py --duration 5 --rounds 3 --pg-url postgresql+psycopg://postgres@127.0.0.1:5432/bench

Time to first token of a paced stream (the hold-back window's cost) is measured with an
aiohttp client at concurrency 1.
"""

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CHAT_BODY = {
    "model": "fake-model",
    "messages": [
        {"role": "system", "content": "You are a helpful support assistant. Be brief."},
        {
            "role": "user",
            "content": "say: Thanks for waiting. Your order 4471 shipped today and should "
            "arrive within three business days; reply here if it does not.",
        },
    ],
}


# --- the bare proxy (run in its own process with --serve-bare) --------------------------------


def bare_app(upstream: str):
    """The floor: a raw ASGI pass-through (no framework, no parsing) with a pooled aiohttp
    client, served like the guard proxy (uvicorn, uvloop, httptools)."""
    import aiohttp

    state: dict[str, aiohttp.ClientSession] = {}

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    state["session"] = aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=4),
                        headers={"Content-Type": "application/json"},
                    )
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await state["session"].close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["path"] == "/healthz":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        async with state["session"].post(f"{upstream}/chat/completions", data=body) as r:
            kind = r.headers.get("Content-Type", "application/json").encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": r.status,
                    "headers": [(b"content-type", kind)],
                }
            )
            async for chunk in r.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return app


# --- orchestration ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(port: int, path: str = "/healthz", timeout: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listening on {port}")


def run_wrk(
    url: str,
    key: str | None,
    args: argparse.Namespace,
    workdir: Path,
    *,
    stream: bool = False,
) -> dict[str, float]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(dict(CHAT_BODY, stream=stream)))}\n"
        + "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
        + "done = function(summary, latency, requests)\n"
        + '  io.write(string.format("ERRORS %d %d\\n", summary.errors.status,'
        + " summary.errors.connect + summary.errors.read + summary.errors.write"
        + " + summary.errors.timeout))\nend\n"
    )
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--latency",
        "--timeout",
        "30s",
        "-s",
        str(script),
        url,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def latency_ms(label: str) -> float:
        match = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if not match:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"ERRORS (\d+) (\d+)", output)
    return {
        "rps": rps,
        "p50_ms": latency_ms("50%"),
        "p99_ms": latency_ms("99%"),
        "non2xx": float(errors.group(1)) if errors else float("nan"),
        "socket_errors": float(errors.group(2)) if errors else float("nan"),
    }


async def ttft(url: str, key: str | None, runs: int) -> float:
    """Median seconds to the first non-empty content chunk of a streamed chat."""
    import aiohttp

    body = dict(CHAT_BODY, stream=True)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    samples = []
    async with aiohttp.ClientSession(headers=headers) as session:
        for _ in range(runs):
            started = time.perf_counter()
            first = None
            async with session.post(url, json=body) as response:
                assert response.status == 200, await response.text()
                async for line in response.content:
                    if line.startswith(b"data: {") and b'"content":"' in line.replace(b": ", b":"):
                        event = json.loads(line[6:])
                        delta = event["choices"][0].get("delta", {}) if event["choices"] else {}
                        if delta.get("content") and first is None:
                            first = time.perf_counter() - started
                if first is None:
                    raise RuntimeError("no content chunk")
            samples.append(first)
    samples.sort()
    return samples[len(samples) // 2]


def versions() -> str:
    names = ["fastapi", "starlette", "uvicorn", "aiohttp", "httpx", "pydantic"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (absent)")
    for name in ("uvloop", "httptools"):
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} absent")
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0]
    return f"Python {platform.python_version()}; " + ", ".join(found) + f"; {wrk.strip()}"


from machine import cpu_model  # noqa: E402 - bench/ is on sys.path when run as a script


def machine() -> str:
    cpu = cpu_model()
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu})"


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    by_rps = sorted(runs, key=lambda r: r["rps"])
    return by_rps[len(by_rps) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description="guard proxy vs bare pass-through vs upstream")
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per target")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", default="1,2", help="worker counts to compare")
    parser.add_argument("--ttft-runs", type=int, default=15)
    parser.add_argument("--pg-url", help="PostgreSQL audit store (omit: no PostgreSQL rows)")
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", default="", help=argparse.SUPPRESS)
    parser.add_argument("--bare-workers", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve_bare:
        import uvicorn

        sys.path.insert(0, str(Path(__file__).parent))
        os.environ["BENCH_BARE_UPSTREAM"] = args.upstream
        uvicorn.run(
            "bench_proxy:bare_from_env",
            factory=True,
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
            access_log=False,
            workers=args.bare_workers,
            loop="uvloop",
            http="httptools",
        )
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")

    workdir = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDRAILS_")}
    env["PYTHONPATH"] = str(ROOT / "bench")
    processes: list[subprocess.Popen[bytes]] = []

    def spawn(command: list[str]) -> subprocess.Popen[bytes]:
        log = (workdir / f"proc{len(processes)}.log").open("wb")
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        processes.append(process)
        return process

    try:
        up_port, paced_port = free_port(), free_port()
        spawn([PY, "-m", "guardrails.proxy.testing", "--port", str(up_port)])
        spawn(
            [
                PY,
                "-m",
                "guardrails.proxy.testing",
                "--port",
                str(paced_port),
                "--chunk-delay-ms",
                "5",
            ]
        )
        upstream = f"http://127.0.0.1:{up_port}/v1"
        paced = f"http://127.0.0.1:{paced_port}/v1"
        wait_up(up_port, "/v1/models")
        wait_up(paced_port, "/v1/models")

        from guardrails.proxy.keys import add_key

        keys_file = workdir / "keys.json"
        key, _ = add_key(keys_file, tenant="bench")
        audits: dict[str, str | None] = {
            "off": None,
            "SQLite": f"sqlite:///{workdir / 'audit.db'}",
        }
        if args.pg_url:
            audits["PostgreSQL"] = args.pg_url

        def serve_guard(target: str, audit: str | None, workers: int) -> int:
            port = free_port()
            where = ["--audit", audit] if audit else ["--no-audit"]
            cli = "from guardrails.cli import main; main()"
            spawn(
                [
                    PY,
                    "-c",
                    cli,
                    "serve",
                    "--upstream",
                    target,
                    "--keys",
                    str(keys_file),
                    *where,
                    "--port",
                    str(port),
                    "--workers",
                    str(workers),
                ]
            )
            wait_up(port)
            return port

        def serve_bare(target: str, workers: int) -> int:
            port = free_port()
            spawn(
                [
                    PY,
                    __file__,
                    "--serve-bare",
                    "--port",
                    str(port),
                    "--upstream",
                    target,
                    "--bare-workers",
                    str(workers),
                ]
            )
            wait_up(port)
            return port

        print(f"machine: {machine()}")
        print(f"versions: {versions()}")
        print(f"{load()} at start")
        print(
            f"load: wrk -t{args.threads} -c{args.connections} -d{args.duration}s x {args.rounds}"
            " alternating rounds per target (median by req/s); upstream: fake OpenAI server"
        )
        worker_counts = [int(w) for w in args.workers.split(",")]
        single = argparse.Namespace(**{**vars(args), "connections": 1, "threads": 1})
        for workers in worker_counts:
            targets: dict[str, tuple[str, str | None]] = {
                "upstream direct": (f"{upstream}/chat/completions", None),
                "bare proxy": (
                    f"http://127.0.0.1:{serve_bare(upstream, workers)}/v1/chat/completions",
                    None,
                ),
            }
            for label, audit in audits.items():
                port = serve_guard(upstream, audit, workers)
                targets[f"guard, audit {label}"] = (
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    key,
                )
            for url, k in targets.values():  # warm up (classifier load, pools)
                run_wrk(url, k, argparse.Namespace(**{**vars(args), "duration": 1}), workdir)
            for stream in (False, True):
                runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
                for _ in range(args.rounds):
                    for name, (url, k) in targets.items():
                        runs[name].append(run_wrk(url, k, args, workdir, stream=stream))
                one: dict[str, dict[str, float]] = {}
                for name, (url, k) in targets.items():
                    one[name] = run_wrk(url, k, single, workdir, stream=stream)
                results = {name: median_of(r) for name, r in runs.items()}
                mode = "streaming" if stream else "non-streaming"
                print(f"\n== {workers} worker(s), {mode} ({load()}) ==")
                print(
                    f"{'':24}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'x bare':>8}{'non2xx':>8}"
                    f"{'c=1 p50':>9}{'c=1 p99':>9}{'+p99 vs up':>11}"
                )
                bare_rps = results["bare proxy"]["rps"]
                direct_p99 = one["upstream direct"]["p99_ms"]
                for name, r in results.items():
                    print(
                        f"{name:24}{r['rps']:9.0f}{r['p50_ms']:9.2f}{r['p99_ms']:9.2f}"
                        f"{r['rps'] / bare_rps:8.2f}{r['non2xx']:8.0f}"
                        f"{one[name]['p50_ms']:9.2f}{one[name]['p99_ms']:9.2f}"
                        f"{one[name]['p99_ms'] - direct_p99:11.2f}"
                    )
                print("goals: guard >= 0.70 x bare req/s; added p99 at c=1 <= 10 ms")

        paced_bare = serve_bare(paced, 1)
        paced_guard = serve_guard(paced, audits["SQLite"], 1)
        t_bare = asyncio.run(
            ttft(f"http://127.0.0.1:{paced_bare}/v1/chat/completions", None, args.ttft_runs)
        )
        t_guard = asyncio.run(
            ttft(f"http://127.0.0.1:{paced_guard}/v1/chat/completions", key, args.ttft_runs)
        )
        print(
            f"\nstreaming time to first token (upstream paces 4-char chunks every 5 ms; "
            f"default policy hold-back), median of {args.ttft_runs}: "
            f"bare {t_bare * 1000:.1f} ms, guard {t_guard * 1000:.1f} ms, "
            f"added {(t_guard - t_bare) * 1000:.1f} ms"
        )
        print(f"{load()} at end")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def bare_from_env():
    """The bare app for uvicorn workers (``--serve-bare``)."""
    return bare_app(os.environ["BENCH_BARE_UPSTREAM"])


if __name__ == "__main__":
    main()
