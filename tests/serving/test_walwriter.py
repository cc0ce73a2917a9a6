"""The WAL's writer (serving.walwriter) in-process: segments made ahead as zero-filled spares."""

import errno
import os

from serving import eventlog, walwriter
from serving.walwriter import CREATE, NO_OPEN, OPENED, WRITTEN, Writer


def record(first: int, lines: bytes) -> memoryview:
    return memoryview(eventlog._record(first, lines))


def test_a_new_segment_is_the_spare_made_ahead_and_writes_into_it_do_not_grow_it(tmp_path):
    writer = Writer()
    first, second = tmp_path / "api.000000000001.wal", tmp_path / "api.000000000003.wal"
    spare = walwriter.spare_path(tmp_path, "api")
    one, two, three = record(1, b'{"a":1}\n{"a":2}'), record(3, b'{"a":3}'), record(4, b'{"a":4}')

    # The first segment is created empty; a spare is made for the next one.
    assert writer.handle(CREATE, str(first), -1, 0, one)[:2] == (OPENED | WRITTEN, 0)
    assert first.read_bytes() == bytes(one)
    writer.spare._thread.join()
    assert spare.stat().st_size == walwriter.SPARE_MIN
    assert spare.read_bytes().strip(b"\0") == b""

    # The next segment is the spare, renamed: the data lands at its start, the zeros stay after it.
    assert writer.handle(CREATE, str(second), -1, 0, two)[:2] == (OPENED | WRITTEN, 0)
    assert writer.handle(NO_OPEN, str(second), -1, len(two), three)[:2] == (WRITTEN, 0)
    data = second.read_bytes()
    assert len(data) == walwriter.SPARE_MIN
    assert data[: len(two) + len(three)] == bytes(two) + bytes(three)
    assert data[len(two) + len(three) :].strip(b"\0") == b""
    assert os.stat(second).st_nlink == 1  # not a second name of the next spare
    batches, valid, size, torn = eventlog._read_segment(second)
    assert [b[:2] for b in batches] == [(3, 1), (4, 1)]
    assert (valid, size, torn) == (len(two) + len(three), walwriter.SPARE_MIN, False)

    writer.spare.remove()
    assert not spare.exists()


def test_the_spare_never_replaces_an_existing_segment(tmp_path):
    writer = Writer()
    first, existing = tmp_path / "api.000000000001.wal", tmp_path / "api.000000000002.wal"
    existing.write_bytes(b"kept")
    writer.handle(CREATE, str(first), -1, 0, record(1, b'{"a":1}'))
    writer.spare._thread.join()

    flags, error, _, _ = writer.handle(CREATE, str(existing), -1, 0, record(2, b'{"a":2}'))
    assert (flags, error) == (0, errno.EEXIST)
    assert existing.read_bytes() == b"kept"
    assert walwriter.spare_path(tmp_path, "api").stat().st_size == walwriter.SPARE_MIN  # kept for the next one
    writer.spare.remove()


def test_the_spare_is_twice_the_last_segment_within_bounds(tmp_path):
    writer = Writer()
    big = record(1, b"x" * (walwriter.SPARE_MIN * 3 // 4))
    writer.handle(CREATE, str(tmp_path / "api.000000000001.wal"), -1, 0, big)
    writer.spare._thread.join()
    writer.handle(CREATE, str(tmp_path / "api.000000000002.wal"), -1, 0, record(2, b'{"a":2}'))
    writer.spare._thread.join()
    assert walwriter.spare_path(tmp_path, "api").stat().st_size == 2 * len(big)
    writer.spare.remove()
