"""Running aiohttp apps: blocking ``serve`` for the CLI, ``AppThread`` for tests and notebooks."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any


async def start_site(app: Any, host: str, port: int, shutdown_timeout: float = 10.0) -> tuple[Any, int]:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


def serve(make_app: Callable[[], Any], host: str, port: int, banner: str = "listening") -> None:
    """Run until SIGINT/SIGTERM; prints ``<banner> on http://host:port`` (flushed) once bound."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner, bound = await start_site(make_app(), host, port)
        print(f"{banner} on http://{host}:{bound}", flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
    sys.stdout.flush()


class AppThread:
    """Serve an aiohttp app on 127.0.0.1 in a background thread with its own event loop."""

    def __init__(self, make_app: Callable[[], Any], host: str = "127.0.0.1", port: int = 0) -> None:
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, args=(make_app, host, port), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("server thread did not start within 30 s")
        if self._error is not None:
            raise self._error

    def _run(self, make_app: Callable[[], Any], host: str, port: int) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self._runner, self.port = self.loop.run_until_complete(start_site(make_app(), host, port, 1.0))
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._runner.cleanup())
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)

    def __enter__(self) -> AppThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
