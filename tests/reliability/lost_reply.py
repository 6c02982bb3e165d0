"""A proxy that loses the reply of one committed statement: the connection drops after the commit.

It sits between the plugin and the server and reads the protocol's messages. Once armed
with a marker, the first statement whose text contains the marker (or a later execution of
the prepared statement parsed from that text) is let through to the server, which runs and
commits it; the server's reply is held back until its ``ReadyForQuery``, which the server
sends only after the commit, and then both sockets are closed and the reply is never
delivered. The client sees a lost connection after a committed write, the case the database
layer resends for.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict

from pynenc_postgres.db.settings import libpq_url

# Untyped requests before the startup message (TLS and GSS encryption).
_ENCRYPTION_REQUESTS = (80877103, 80877104)


class LostReplyProxy:
    """Forward connections to the server of ``url``; drop one reply when armed.

    :param url: the server's URL (Unix socket or TCP).
    """

    def __init__(self, url: str) -> None:
        params = conninfo_to_dict(libpq_url(url))
        self._params = params
        host = str(params.get("host") or "/tmp")
        port = int(params.get("port") or 5432)
        if host.startswith("/"):
            self._family, self._address = socket.AF_UNIX, f"{host}/.s.PGSQL.{port}"
        else:
            self._family, self._address = socket.AF_INET, (host, port)  # type: ignore[assignment]
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self.dropped = 0
        self._closed = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        """The URL that reaches the server through this proxy."""
        p = self._params
        user = quote(str(p.get("user") or "postgres"), safe="")
        password = p.get("password")
        auth = f"{user}:{quote(str(password), safe='')}" if password else user
        database = quote(str(p.get("dbname") or "postgres"), safe="")
        return (
            f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"
            "?sslmode=disable&gssencmode=disable"
        )

    def arm(self, marker: str) -> None:
        """Lose the reply of the next statement whose text contains ``marker``."""
        with self._lock:
            self._marker = marker.encode()

    def close(self) -> None:
        self._closed = True
        for sock in [self._listener, *self._sockets]:
            try:
                sock.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.socket(self._family, socket.SOCK_STREAM)
            server.connect(self._address)
            self._sockets += [client, server]
            doomed = threading.Event()
            threading.Thread(
                target=self._upstream, args=(client, server, doomed), daemon=True
            ).start()
            threading.Thread(
                target=self._downstream, args=(server, client, doomed), daemon=True
            ).start()

    def _upstream(
        self, client: socket.socket, server: socket.socket, doomed: threading.Event
    ) -> None:
        """Client to server: spot the marked statement, forward everything."""
        matching: set[bytes] = set()  # prepared statements parsed from the marked text
        try:
            startup = True
            while True:
                if startup:
                    header = _recv_exact(client, 4)
                    body = _recv_exact(client, int.from_bytes(header, "big") - 4)
                    startup = int.from_bytes(body[:4], "big") in _ENCRYPTION_REQUESTS
                    server.sendall(header + body)
                    continue
                kind = _recv_exact(client, 1)
                header = _recv_exact(client, 4)
                body = _recv_exact(client, int.from_bytes(header, "big") - 4)
                with self._lock:
                    marker = self._marker
                if marker is not None:
                    if kind == b"P":
                        name = body.split(b"\0", 1)[0]
                        if marker in body:
                            if name:
                                matching.add(name)
                            doomed.set()
                    elif kind == b"Q" and marker in body:
                        doomed.set()
                    elif kind == b"B" and body.split(b"\0")[1] in matching:
                        doomed.set()
                server.sendall(kind + header + body)
        except OSError:
            pass
        finally:
            _close(client, server)

    def _downstream(
        self, server: socket.socket, client: socket.socket, doomed: threading.Event
    ) -> None:
        """Server to client: once doomed, hold the reply back and drop the connection after
        the ``ReadyForQuery`` that follows the commit."""
        try:
            while True:
                kind = _recv_exact(server, 1)
                header = _recv_exact(server, 4)
                body = _recv_exact(server, int.from_bytes(header, "big") - 4)
                if doomed.is_set():
                    if kind == b"Z":
                        with self._lock:
                            self.dropped += 1
                            self._marker = None
                        return
                    continue
                client.sendall(kind + header + body)
        except OSError:
            pass
        finally:
            _close(client, server)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n > 0:
        chunk = sock.recv(n)
        if not chunk:
            raise OSError("connection closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            sock.close()
        except OSError:
            pass


@contextmanager
def lost_reply_proxy(url: str) -> Iterator[LostReplyProxy]:
    proxy = LostReplyProxy(url)
    try:
        yield proxy
    finally:
        proxy.close()
