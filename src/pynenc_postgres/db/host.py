"""One notifier per host: an abstract Unix socket elects it, and links the host's processes.

On Linux a Unix socket may be bound to an *abstract* name, one that lives in the kernel
rather than the file system. Such a name belongs to the network namespace: every process
of a host (or of a container with its own network) sees the same names, other hosts
never do. The first process to bind the name leads: it holds the host's one ``LISTEN``
connection and runs the :class:`~pynenc_postgres.db.dispatch.Dispatcher`; the others
connect to it and follow. The kernel frees the name when the leader's socket closes,
also when its process is killed, so a follower that loses its leader binds the name
itself or connects to whoever did.

Both ends check the other's user id (``SO_PEERCRED``): a process of another user that
holds the name is never followed, and never served.

Messages are JSON objects, one per line. A follower sends ``idle`` and ``cancel``; the
leader sends ``wake``, ``gen`` (look at the table again), ``blk`` (blocking-control
edges changed) and ``live`` (whether notifications arrive).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import selectors
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pynenc_postgres.db.dispatch import Dispatcher, Message

logger = logging.getLogger(__name__)

_CREDENTIALS = struct.Struct("3i")  # struct ucred: pid, uid, gid
_ELECTION_ATTEMPTS = 200
_ELECTION_PAUSE_SEC = 0.005
_SEND_TIMEOUT_SEC = 5.0
_TICK_SEC = 0.25


def host_scope_available() -> bool:
    """Abstract Unix socket names exist on Linux only."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_PEERCRED")


def abstract_name(identity: str) -> str:
    """The abstract socket name of one database and channel, for this user."""
    digest = hashlib.sha256(f"{os.getuid()}\0{identity}".encode()).hexdigest()[:40]
    return f"\0pynenc-postgres/{digest}"


def peer_uid(sock: socket.socket) -> int:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CREDENTIALS.size)
    return int(_CREDENTIALS.unpack(raw)[1])


def elect(name: str) -> tuple[str, socket.socket] | None:
    """Bind ``name`` (lead) or connect to its holder (follow).

    :return: ``("lead", listening socket)``, ``("follow", connected socket)``, or None
        when neither works (the name is held by another user's process).
    """
    for _ in range(_ELECTION_ATTEMPTS):
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.bind(name)
            server.listen(256)
        except OSError as exc:
            server.close()
            if exc.errno != errno.EADDRINUSE:
                raise
        else:
            return "lead", server
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(name)
        except (ConnectionRefusedError, FileNotFoundError):
            # Bound but not listening yet, or freed in between: elect again.
            client.close()
            time.sleep(_ELECTION_PAUSE_SEC)
            continue
        if peer_uid(client) != os.getuid():
            client.close()
            logger.warning(
                "The host notifier's socket name is held by a process of another user; "
                "this process listens on its own connection."
            )
            return None
        return "follow", client
    return None


def encode(message: Message) -> bytes:
    return (json.dumps(message, separators=(",", ":")) + "\n").encode("ascii")


class LineReader:
    """Splits what a stream socket delivers into JSON messages."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        return [json.loads(line) for line in lines if line]


class RemotePeer:
    """A follower, as the leader sees it. Sends never block the leader."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = LineReader()
        self._lock = threading.Lock()
        self.closed = False

    def send(self, message: Message) -> bool:
        if self.closed:
            return False
        data = encode(message)
        with self._lock:
            try:
                sent = self.sock.send(data)
            except OSError:
                sent = -1
            if sent == len(data):
                return True
        # A follower that does not read (stopped, stuck) is dropped; it reconnects and
        # looks at the table again when it comes back.
        self.close()
        return False

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


class Leadership:
    """The leader's socket: accepts followers and hands their messages to the dispatcher."""

    def __init__(self, server: socket.socket, dispatcher: Dispatcher) -> None:
        self.server = server
        self.dispatcher = dispatcher
        self.followers = 0
        self._stopped = False
        self._selector = selectors.DefaultSelector()
        self._selector.register(server, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="pynenc-postgres-host", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped:
            try:
                events = self._selector.select(timeout=_TICK_SEC)
            except OSError:
                return
            self.dispatcher.expire()
            for selected, _ in events:
                if selected.data is None:
                    self._accept()
                else:
                    self._read(selected.data)

    def _accept(self) -> None:
        try:
            sock, _ = self.server.accept()
        except OSError:
            return
        if peer_uid(sock) != os.getuid():
            sock.close()
            return
        sock.setblocking(False)
        peer = RemotePeer(sock)
        self._selector.register(sock, selectors.EVENT_READ, peer)
        self.followers += 1
        self.dispatcher.join(peer)

    def _read(self, peer: RemotePeer) -> None:
        try:
            data = peer.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(peer)
            return
        try:
            messages = peer.reader.feed(data)
        except ValueError:
            self._drop(peer)
            return
        for message in messages:
            kind = message.get("t")
            if kind == "idle":
                self.dispatcher.idle(
                    peer, int(message["s"]), str(message["k"]), float(message["a"]),
                    float(message["w"]),
                )  # fmt: skip
            elif kind == "cancel":
                self.dispatcher.cancel(peer, int(message["s"]), str(message["k"]))
            elif kind == "ack":
                self.dispatcher.ack(peer, int(message["s"]))

    def _drop(self, peer: RemotePeer) -> None:
        try:
            self._selector.unregister(peer.sock)
        except (KeyError, ValueError, OSError):
            pass
        peer.close()
        self.followers -= 1
        self.dispatcher.leave(peer)

    def close(self) -> None:
        """Stop leading: the followers see their connection close and elect anew."""
        self._stopped = True
        for key in list(self._selector.get_map().values()):
            peer = key.data
            if isinstance(peer, RemotePeer):
                peer.close()
        try:
            self.server.close()
        except OSError:
            pass

    def forget_in_child(self) -> None:
        """After fork: close the child's copies of the sockets (the parent keeps its own)."""
        self._stopped = True
        for key in list(self._selector.get_map().values()):
            try:
                key.fileobj.close()  # type: ignore[union-attr]
            except OSError:
                pass


class Following:
    """A follower's connection to its leader, read by a daemon thread."""

    def __init__(
        self,
        sock: socket.socket,
        on_message: Callable[[Message], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.sock = sock
        self.sock.settimeout(_SEND_TIMEOUT_SEC)
        self._on_message = on_message
        self._on_lost = on_lost
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name="pynenc-postgres-follow", daemon=True
        )
        self._thread.start()

    def send(self, message: Message) -> bool:
        data = encode(message)
        with self._lock:
            if self._closed:
                return False
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                return False

    def _run(self) -> None:
        reader = LineReader()
        sock = self.sock
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data:
                break
            try:
                for message in reader.feed(data):
                    self._on_message(message)
            except ValueError:
                break
        with self._lock:
            was_closed = self._closed
            self._closed = True
        try:
            sock.close()
        except OSError:
            pass
        if not was_closed:
            self._on_lost()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def forget_in_child(self) -> None:
        self._closed = True
        try:
            self.sock.close()
        except OSError:
            pass


def describe(identity: dict[str, Any]) -> str:
    """A stable text of the connection facts that identify one database."""
    return json.dumps(identity, sort_keys=True)
