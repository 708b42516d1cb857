"""Benchmark: the guard proxy against a bare pass-through proxy on the same stack.

Everything runs on loopback in separate processes: the fake OpenAI upstream (aiohttp), a
bare FastAPI/uvicorn pass-through (raw bytes, no parsing, pooled client), and the guard
proxy (`guardrails serve` with the shipped default policy, API keys, and the durable SQLite
audit log on). ``wrk`` drives each with the same connections, threads and duration; the
figures and their ratio are printed with the machine and versions.

    .venv/bin/python bench/bench_proxy.py                 # guard vs bare (aiohttp)
    .venv/bin/python bench/bench_proxy.py --clients       # bare: aiohttp vs httpx client
    .venv/bin/python bench/bench_proxy.py --duration 20 --connections 64 --workers 1

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


def bare_app(upstream: str, client: str):
    """The fastest pass-through on the same stack: FastAPI + uvicorn + one pooled client."""
    import contextlib

    from fastapi import FastAPI, Request
    from starlette.responses import Response, StreamingResponse

    state: dict[str, object] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if client == "aiohttp":
            import aiohttp

            state["session"] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256),
                headers={"Content-Type": "application/json"},
            )
        else:
            import httpx

            state["session"] = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=256),
                headers={"Content-Type": "application/json"},
            )
        yield
        await state["session"].close() if client == "aiohttp" else await state["session"].aclose()

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.body()
        session = state["session"]
        streaming = b'"stream": true' in body or b'"stream":true' in body
        if client == "aiohttp":
            if streaming:
                upstream_response = await session.post(f"{upstream}/chat/completions", data=body)

                async def relay():
                    async for chunk in upstream_response.content.iter_any():
                        yield chunk
                    upstream_response.release()

                return StreamingResponse(relay(), media_type="text/event-stream")
            async with session.post(f"{upstream}/chat/completions", data=body) as r:
                data = await r.read()
                return Response(data, status_code=r.status, media_type="application/json")
        if streaming:
            req = session.build_request("POST", f"{upstream}/chat/completions", content=body)
            upstream_response = await session.send(req, stream=True)

            async def relay_httpx():
                async for chunk in upstream_response.aiter_raw():
                    yield chunk
                await upstream_response.aclose()

            return StreamingResponse(relay_httpx(), media_type="text/event-stream")
        r = await session.post(f"{upstream}/chat/completions", content=body)
        return Response(r.content, status_code=r.status_code, media_type="application/json")

    return app


# --- orchestration ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(port: int, path: str = "/healthz", timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listening on {port}")


def run_wrk(url: str, key: str | None, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(CHAT_BODY))}\n"
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


def main() -> None:
    parser = argparse.ArgumentParser(description="guard proxy vs bare pass-through")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--clients", action="store_true", help="compare bare aiohttp vs httpx")
    parser.add_argument("--ttft-runs", type=int, default=15)
    parser.add_argument("--audit-url", help="audit store for the guard (default: SQLite file)")
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", default="aiohttp", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve_bare:
        import uvicorn

        uvicorn.run(
            bare_app(args.upstream, args.client),
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
            access_log=False,
            workers=1,
        )
        return
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")

    workdir = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDRAILS_")}
    processes: list[subprocess.Popen[bytes]] = []

    def spawn(command: list[str]) -> None:
        log = (workdir / f"proc{len(processes)}.log").open("wb")
        processes.append(
            subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        )

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
        audit_url = f"sqlite:///{workdir / 'audit.db'}"

        def serve_guard(target: str, *, audit: bool = True) -> int:
            port = free_port()
            where = ["--audit", args.audit_url or audit_url] if audit else ["--no-audit"]
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
                    str(args.workers),
                ]
            )
            wait_up(port)
            return port

        def serve_bare(target: str, client: str) -> int:
            port = free_port()
            spawn(
                [
                    PY,
                    __file__,
                    "--serve-bare",
                    "--client",
                    client,
                    "--port",
                    str(port),
                    "--upstream",
                    target,
                ]
            )
            wait_up(port, "/docs")
            return port

        print(f"machine: {machine()}")
        print(f"versions: {versions()}")
        print(
            f"load: wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
            f"{args.workers} uvicorn worker(s) per proxy, same loopback upstream (aiohttp)"
        )
        results: dict[str, dict[str, float]] = {}
        bare_port = serve_bare(upstream, "aiohttp")
        if args.clients:
            httpx_port = serve_bare(upstream, "httpx")
        guard_port = serve_guard(upstream)
        rules_port = serve_guard(upstream, audit=False)
        # warm both, then measure alternately so drift on a shared machine hits both
        for port, k in ((bare_port, None), (guard_port, key), (rules_port, key)):
            run_wrk(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                k,
                argparse.Namespace(**{**vars(args), "duration": 2}),
                workdir,
            )
        results["upstream-direct"] = run_wrk(f"{upstream}/chat/completions", None, args, workdir)
        results["bare (aiohttp)"] = run_wrk(
            f"http://127.0.0.1:{bare_port}/v1/chat/completions", None, args, workdir
        )
        if args.clients:
            results["bare (httpx)"] = run_wrk(
                f"http://127.0.0.1:{httpx_port}/v1/chat/completions", None, args, workdir
            )
        results["guard, audit off"] = run_wrk(
            f"http://127.0.0.1:{rules_port}/v1/chat/completions", key, args, workdir
        )
        results["guard proxy"] = run_wrk(
            f"http://127.0.0.1:{guard_port}/v1/chat/completions", key, args, workdir
        )
        single = argparse.Namespace(**{**vars(args), "connections": 1, "threads": 1})
        results["bare, 1 connection"] = run_wrk(
            f"http://127.0.0.1:{bare_port}/v1/chat/completions", None, single, workdir
        )
        results["guard, 1 connection"] = run_wrk(
            f"http://127.0.0.1:{guard_port}/v1/chat/completions", key, single, workdir
        )
        print(f"\n{'':22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>9}{'sock err':>9}")
        for name, r in results.items():
            print(
                f"{name:22}{r['rps']:10.0f}{r['p50_ms']:10.2f}{r['p99_ms']:10.2f}"
                f"{r['non2xx']:9.0f}{r['socket_errors']:9.0f}"
            )
        bare, guard = results["bare (aiohttp)"], results["guard proxy"]
        rules_only = results["guard, audit off"]
        print(f"\nguard/bare requests/s ratio: {guard['rps'] / bare['rps']:.2f}  (goal >= 0.70)")
        print(f"guard without audit/bare ratio: {rules_only['rps'] / bare['rps']:.2f}")
        print(
            f"added p99 at c={args.connections} (saturated, mostly queueing): "
            f"{guard['p99_ms'] - bare['p99_ms']:.2f} ms"
        )
        one_bare, one_guard = results["bare, 1 connection"], results["guard, 1 connection"]
        print(
            f"added latency unloaded (1 connection): p50 "
            f"{one_guard['p50_ms'] - one_bare['p50_ms']:.2f} ms, p99 "
            f"{one_guard['p99_ms'] - one_bare['p99_ms']:.2f} ms  (goal: added p99 <= 10 ms)"
        )
        if args.clients:
            print(
                f"bare aiohttp/httpx requests/s ratio: "
                f"{bare['rps'] / results['bare (httpx)']['rps']:.2f}"
            )

        paced_bare = serve_bare(paced, "aiohttp")
        paced_guard = serve_guard(paced)
        t_bare = asyncio.run(
            ttft(f"http://127.0.0.1:{paced_bare}/v1/chat/completions", None, args.ttft_runs)
        )
        t_guard = asyncio.run(
            ttft(f"http://127.0.0.1:{paced_guard}/v1/chat/completions", key, args.ttft_runs)
        )
        print(
            f"\nstreaming time to first token (upstream paces 4-char chunks every 5 ms; "
            f"default policy hold-back 24 chars), median of {args.ttft_runs}: "
            f"bare {t_bare * 1000:.1f} ms, guard {t_guard * 1000:.1f} ms, "
            f"added {(t_guard - t_bare) * 1000:.1f} ms"
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
