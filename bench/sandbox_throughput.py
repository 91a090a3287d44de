"""How many requests per second the Graph API sandbox sustains, against a bare Starlette 200 endpoint
served the same way in the same run (the ceiling of one uvicorn worker on this machine).

Each server runs in its own process (one uvicorn worker, as ``everreach-data sandbox`` runs); the load
comes from this process over keep-alive connections with a minimal HTTP/1.1 client, so the client's own
overhead stays small next to the server's. Prints one JSON line.

    .venv/bin/python bench/sandbox_throughput.py [--seconds 4] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from everreach_data.serving import free_port  # noqa: E402
from everreach_sandbox.defaults import SANDBOX_DEFAULTS  # noqa: E402

PAGE = SANDBOX_DEFAULTS["MESSENGER_PAGE_ID"]
TOKEN = SANDBOX_DEFAULTS["MESSENGER_PAGE_TOKEN"]
TARGETS = {
    "bare": "/ok",
    "sandbox_get": f"/v24.0/{PAGE}?fields=id,name&access_token={TOKEN}",
    "sandbox_insights": f"/v24.0/{PAGE}/insights?metric=page_media_view,page_follows&period=day"
    f"&access_token={TOKEN}",
}


def serve(kind: str, port: int) -> None:
    import uvicorn

    if kind == "bare":
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        async def ok(request):  # noqa: ANN001
            return JSONResponse({"id": PAGE, "name": "bare"})

        app = Starlette(routes=[Route("/ok", ok)])
    else:
        from everreach_sandbox.server import build_app

        app = build_app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


async def _worker(port: int, path: str, stop_at: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    try:
        while time.perf_counter() < stop_at:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            counts[0 if status == 200 else 1] += 1
    finally:
        writer.close()


async def load(port: int, path: str, seconds: float, concurrency: int) -> tuple[float, int]:
    counts = [0, 0]
    await asyncio.gather(
        *(_worker(port, path, time.perf_counter() + 0.5, [0, 0]) for _ in range(4))
    )  # warm-up
    started = time.perf_counter()
    await asyncio.gather(*(_worker(port, path, started + seconds, counts) for _ in range(concurrency)))
    return counts[0] / (time.perf_counter() - started), counts[1]


def measure(kind: str, paths: list[str], seconds: float, concurrency: int) -> list[tuple[float, int]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{kind} server did not start") from None
                time.sleep(0.05)
        return [asyncio.run(load(port, path, seconds, concurrency)) for path in paths]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serve", choices=["bare", "sandbox"])
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.port)
        return
    [(bare, bare_errors)] = measure("bare", [TARGETS["bare"]], args.seconds, args.concurrency)
    (get, get_errors), (insights, insights_errors) = measure(
        "sandbox", [TARGETS["sandbox_get"], TARGETS["sandbox_insights"]], args.seconds, args.concurrency
    )
    print(
        json.dumps(
            {
                "benchmark": "sandbox_throughput",
                "concurrency": args.concurrency,
                "seconds_each": args.seconds,
                "bare_starlette_rps": round(bare),
                "sandbox_get_rps": round(get),
                "sandbox_page_insights_rps": round(insights),
                "sandbox_get_vs_bare": round(get / bare, 2),
                "non_200": bare_errors + get_errors + insights_errors,
            }
        )
    )


if __name__ == "__main__":
    main()
