"""Bench: egress-proxy overhead, as a ratio against the same requests sent straight to the stub upstream.

    OMP_NUM_THREADS=1 .venv/bin/python bench/exfil_proxy.py [--requests 200] [--concurrency 20]

Everything runs on 127.0.0.1 with ephemeral ports; the request count is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "exfil"))

from proxy_helpers import ProxyThread, araw_request, chat  # noqa: E402

from alignlab.exfil.proxy_config import ProxyConfig  # noqa: E402
from alignlab.exfil.server import AppThread  # noqa: E402
from alignlab.exfil.stub import make_stub_app  # noqa: E402


async def drive(port: int, n: int, conc: int, stream: bool) -> float:
    sem = asyncio.Semaphore(conc)

    async def one() -> None:
        async with sem:
            await araw_request(port, chat(32, stream=stream), timeout=30)

    t = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*[one() for _ in range(n)]), 300)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=20)
    args = ap.parse_args()
    n = min(args.requests, 2000)
    with tempfile.TemporaryDirectory() as tmp, AppThread(make_stub_app) as stub:
        proxy = ProxyThread(ProxyConfig(upstream=stub.url, db=str(Path(tmp) / "b.db"), capacity="10GB"))
        try:
            for stream in (False, True):
                direct = asyncio.run(drive(stub.port, n, args.concurrency, stream))
                proxied = asyncio.run(drive(proxy.port, n, args.concurrency, stream))
                kind = "streamed" if stream else "whole"
                print(f"{kind:8s} {n} requests: direct {direct:.2f} s, via proxy {proxied:.2f} s, "
                      f"ratio {proxied / direct:.2f}x ({n / proxied:.0f} req/s through the proxy)")
        finally:
            proxy.stop()


if __name__ == "__main__":
    main()
