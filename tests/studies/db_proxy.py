"""A TCP proxy in front of PostgreSQL that a test can cut: every connection dropped and
new ones refused until it is restored; cut at the moment a client sends a given statement
(it is lost in flight); or hang: nothing forwarded and nothing closed, as with a server
gone off the network. The database itself keeps running."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.engine import make_url


class FlakyProxy:
    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.target = (parsed.host or "127.0.0.1", parsed.port or 5432)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = parsed.set(host="127.0.0.1", port=self.listener.getsockname()[1]) \
            .render_as_string(hide_password=False)
        self._up = threading.Event()
        self._up.set()
        self._flowing = threading.Event()  # cleared while it hangs
        self._flowing.set()
        self._markers: tuple[bytes, ...] = ()  # cut_on's
        self._fired = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        """Drop every open connection and refuse new ones."""
        self._up.clear()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._sockets.clear()

    def cut_on(self, *markers: bytes) -> threading.Event:
        """Cut as soon as a client sends a packet holding every marker (SQL text: the
        connections run without TLS), before the server gets it: the statement is lost in
        flight. The event is set once it has cut; `restore` ends the outage."""
        self._fired = threading.Event()
        self._markers = markers
        return self._fired

    def hang(self) -> None:
        """Forward nothing, close nothing: open connections and new ones get no answer
        (what they send is held) until `restore`."""
        self._flowing.clear()

    def restore(self) -> None:
        self._up.set()
        self._flowing.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self._up.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._sockets |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, src is client),
                                 daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while data := src.recv(65536):
                if from_client and self._markers and all(m in data for m in self._markers):
                    self._markers = ()
                    self.cut()
                    self._fired.set()
                    return
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.close()
                except OSError:
                    pass


@contextmanager
def flaky_proxy(url: str) -> Iterator[FlakyProxy]:
    proxy = FlakyProxy(url)
    try:
        yield proxy
    finally:
        proxy.close()
