"""A TCP proxy on loopback that can stop forwarding while keeping every connection open: the
network a dropped VPN, a NAT that forgot the flow or a suspended laptop leaves behind. Nothing
is refused or reset; bytes just stop arriving, both ways."""

from __future__ import annotations

import contextlib
import socket
import threading


class StallProxy:
    def __init__(self, target: tuple[str, int], stall_after_upload: int | None = None) -> None:
        """Forward 127.0.0.1:`port` to `target`; stall once `stall_after_upload` bytes went up."""
        self.target = target
        self.stall_after_upload = stall_after_upload
        self.stalled = threading.Event()
        self.closed = threading.Event()
        self.uploaded = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    def stall(self) -> None:
        self.stalled.set()

    def close(self) -> None:
        self.closed.set()
        for sock in [self.listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, upload: bool) -> None:
        while not self.closed.is_set():
            if self.stalled.is_set():  # hold what came, read no more: the peers' buffers fill up
                self.closed.wait()
                return
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:  # a peer closed
                return
            if self.stalled.is_set():  # never delivered: the check above now holds the line
                continue
            with contextlib.suppress(OSError):
                sink.sendall(data)
            if upload:
                with self._lock:
                    self.uploaded += len(data)
                    if self.stall_after_upload is not None and self.uploaded >= self.stall_after_upload:
                        self.stalled.set()
