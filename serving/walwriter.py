"""The WAL's writer: a process of its own that makes the event log's batches durable.

The event log (serving.eventlog) decides everything: which segment, which bytes, where a failed batch is cut
off. This process only does the blocking file work, one request at a time, in order, and answers each. Being a
process, it has its own GIL: the API's event loop never waits to hand it over, nor it on the loop (a commit
thread had to retake the GIL twice per batch, each time waiting for the busy loop to let go of it, and the loop
then sat idle waiting for batches).

Request: REQUEST header, then the segment's path (UTF-8), then the data. In order, each step only when asked
and only while the ones before succeeded:
- open: CREATE a new segment (O_EXCL, then the folder fsynced), or REOPEN the active one after this process was
  replaced (created if missing);
- cut: truncate the segment to `cut_to` and fsync it (a batch that failed before);
- write: append the data with one synchronous write (O_DSYNC: it returns once the data, and the file's new
  size, are on disk); if it fails, cut the segment back to `start` (its length before) and fsync.
Reply: REPLY header (the steps done as flags, the errno of a failure, the write's nanoseconds), then the failure's
message (UTF-8). The process stops when the log closes its end of the socket; it ignores SIGINT and SIGTERM, so
that the API draining its last batches on shutdown still has it.

    python -m serving.walwriter FD      (FD: this end of a connected AF_UNIX stream socket)
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path

from chatmeter.files import fsync_dir

# open mode (NO_OPEN, CREATE, REOPEN), cut_to (-1: no cut), start (the segment's length before the write),
# path length, data length
REQUEST = struct.Struct(">Bqqiq")
# flags, errno (0 when done), write nanoseconds, message length
REPLY = struct.Struct(">BiQi")
NO_OPEN, CREATE, REOPEN = 0, 1, 2
OPENED, CUT, WRITTEN, UNCUT = 1, 2, 4, 8  # UNCUT: the failed write's bytes may remain (the cut failed too)

_SEGMENT_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_DSYNC | os.O_CLOEXEC


def _open(path: str, mode: int) -> int:
    """The segment, opened for synchronous appends; its creation durable (the folder fsynced)."""
    flags = _SEGMENT_FLAGS | os.O_CREAT | (os.O_EXCL if mode == CREATE else 0)
    fd = os.open(path, flags, 0o644)
    try:
        fsync_dir(Path(path).parent)
    except OSError:
        os.close(fd)
        if mode == CREATE:
            os.unlink(path)
        raise
    return fd


def _write(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _truncate(fd: int, length: int) -> None:
    os.ftruncate(fd, length)
    os.fsync(fd)


class Writer:
    """The segment this process has open, and the steps of one request."""

    def __init__(self) -> None:
        self.fd: int | None = None

    def handle(self, mode: int, path: str, cut_to: int, start: int, data: memoryview) -> tuple[int, int, int, str]:
        flags, nanos = 0, 0
        try:
            if mode != NO_OPEN:
                if self.fd is not None:
                    os.close(self.fd)
                    self.fd = None
                self.fd = _open(path, mode)
                flags |= OPENED
            if self.fd is None:
                raise OSError(errno.EBADF, "no segment is open")
            if cut_to >= 0:
                _truncate(self.fd, cut_to)
                flags |= CUT
            if data:
                began = time.perf_counter_ns()
                try:
                    _write(self.fd, data)
                except OSError:
                    try:
                        _truncate(self.fd, start)
                    except OSError:
                        flags |= UNCUT
                    raise
                nanos = time.perf_counter_ns() - began
                flags |= WRITTEN
        except OSError as exc:
            return flags, exc.errno or 0, nanos, exc.strerror or str(exc)
        return flags, 0, nanos, ""


def _receive(sock: socket.socket, size: int) -> bytearray | None:
    """Exactly `size` bytes, or None once the log closed its end."""
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None
        got += n
    return buf


def serve(sock: socket.socket, writer: Writer | None = None) -> None:
    writer = writer or Writer()
    while (header := _receive(sock, REQUEST.size)) is not None:
        mode, cut_to, start, path_len, data_len = REQUEST.unpack(header)
        body = _receive(sock, path_len + data_len)
        if body is None:
            return
        path = body[:path_len].decode()
        flags, error, nanos, message = writer.handle(mode, path, cut_to, start, memoryview(body)[path_len:])
        text = message.encode()
        sock.sendall(REPLY.pack(flags, error, nanos, len(text)) + text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with socket.socket(fileno=int(argv[0])) as sock:
        try:
            serve(sock)
        except (ConnectionError, BrokenPipeError):
            pass  # the log went away: nothing waits for an answer
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
