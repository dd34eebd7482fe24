"""A TCP proxy in front of the test broker: TLS termination, and outages on demand.

The broker advertises the proxy's port, so every client connection goes through it.
``cut()`` drops every open connection and refuses new ones (the broker is unreachable, as
when it is down or partitioned away; unlike killing Tansu, whose in-memory storage would
lose the topics); ``restore()`` listens again on the same port.
"""

from __future__ import annotations

import asyncio
import ssl
import threading

__all__ = ["Proxy"]


class Proxy:
    """Proxy ``port`` → the broker on ``target_port`` (TLS on the client side if given a
    server ``context``); counts the connections it served."""

    def __init__(self, port: int, target_port: int, context: ssl.SSLContext | None = None
                 ) -> None:
        self.port, self.target_port, self.context = port, target_port, context
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                  ssl=self.context)

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)  # type: ignore[arg-type]

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        self._call(self._cut())

    def restore(self) -> None:
        """Accept connections again."""
        self._call(self._listen())

    def __enter__(self) -> Proxy:
        self.thread.start()
        self.restore()
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._cut())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
