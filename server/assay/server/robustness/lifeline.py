"""Worker processes that end when the server ends, even after ``kill -9``.

A ``kill -9`` runs no cleanup, so the server cannot stop its process pool.
The workers are forked by the forkserver, not by the server, and every
worker holds the forkserver's "alive" pipe open: the forkserver only exits
once its workers have. A parent-death signal (PR_SET_PDEATHSIG) would
therefore never fire — the workers' parent outlives them by design — so the
chain has to start at the workers:

each worker gets the read end of a `Lifeline` pipe whose only write end stays
in the server (pipe fds are close-on-exec, and forkserver children inherit
nothing from the server). A daemon thread in the worker blocks reading it;
when the server dies, for whatever reason, the kernel closes the write end,
the read returns EOF at once and the worker exits. Then the forkserver sees
its alive pipe close and exits, and the resource tracker follows.
"""

from __future__ import annotations

import contextlib
import os
import threading
from multiprocessing.connection import Connection, Pipe


class Lifeline:
    """A pipe held open by the server for as long as it lives."""

    def __init__(self) -> None:
        self.reader, self._writer = Pipe(duplex=False)

    def close(self) -> None:
        """Cut the line on purpose (after a clean shutdown of the pool)."""
        self._writer.close()
        self.reader.close()


def _watch(reader: Connection) -> None:
    with contextlib.suppress(EOFError, OSError):
        reader.recv_bytes()  # nothing is ever sent: this returns only by EOF
    os._exit(1)


def bind_to_server(reader: Connection) -> None:
    """Exit this (worker) process when the server's end of ``reader`` closes; an initializer."""
    threading.Thread(target=_watch, args=(reader,), name="server-lifeline", daemon=True).start()
