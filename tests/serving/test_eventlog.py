"""The durable usage log: group commit, rolls into Parquet, recovery, failures, reading back."""

import asyncio
import errno
import logging
import os
import shutil
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from chatmeter.ids import uuid7
from chatmeter.schemas import EVENT_SCHEMA, TRANSCRIPT_SCHEMA
from serving import eventlog, walwriter
from serving.eventlog import IDEMPOTENCY_SCHEMA, EventLog, LogUnavailable, read_events_after
from tests.doubles.faulty_disk import FaultyDisk

T0 = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def make_event(at: datetime = T0, **overrides) -> dict:
    event = {
        "event_id": uuid7(),
        "idempotency_key": None,
        "occurred_at": at,
        "tenant_id": "ten_a",
        "api_key_id": "key_a",
        "end_user_id": "user_1",
        "conversation_id": "conv_1",
        "context": "api",
        "kind": "chat",
        "status": "ok",
        "provider": "simulated",
        "model": "sim-small",
        "input_tokens": 120,
        "cached_input_tokens": 20,
        "cache_write_tokens": 0,
        "output_tokens": 80,
        "reasoning_tokens": 5,
        "tool_calls": 0,
        "credits": Decimal("1.500000"),
        "provider_cost_usd": Decimal("0.000123450"),
        "latency_ms": 12,
        "usage_estimated": False,
        "embedding_tokens": 0,
        "error_code": None,
    }
    event.update(overrides)
    return event


def make_transcripts(event: dict, n: int = 2) -> list[dict]:
    return [
        {
            "message_id": uuid7(),
            "occurred_at": event["occurred_at"],
            "tenant_id": event["tenant_id"],
            "end_user_id": event["end_user_id"],
            "conversation_id": event["conversation_id"],
            "context": "widget",
            "position": i,
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f'message {i}\nwith a newline and "quotes"',
        }
        for i in range(n)
    ]


def run_log(data_dir: Path, body, writer_id: str = "api", **options):
    """Recover, start, run `body(log)`, close; return body's result."""

    async def main():
        log = EventLog(data_dir, writer_id, **options)
        log.recover()
        await log.start()
        try:
            return await body(log)
        finally:
            await log.close()

    return asyncio.run(main())


def run_and_crash(data_dir: Path, body, writer_id: str = "api", **options):
    """Like run_log, but the process 'dies' after body: nothing is closed or rolled."""
    options.setdefault("roll_bytes", 1 << 40)
    options.setdefault("roll_age_s", 3600)
    log = EventLog(data_dir, writer_id, **options)

    async def main():
        log.recover()
        await log.start()
        return await body(log)

    result = asyncio.run(main())  # cancels the roller where it stands
    log._writer.kill()  # what a crash leaves is what the writer had written
    log._writer.wait()
    log._sock.close()
    log._roll_pool.shutdown()
    return result


@pytest.fixture
def disk(tmp_path, monkeypatch) -> FaultyDisk:
    """The logs started in this test write through a disk that fails when told."""
    disk = FaultyDisk(tmp_path / "disk.json")
    monkeypatch.setattr(eventlog, "WRITER_COMMAND", disk.command)
    return disk


def parquet_files(root: Path) -> list[Path]:
    return sorted(root.glob("**/*.parquet"))


def read_all(root: Path, schema=EVENT_SCHEMA):
    return pq.ParquetDataset(parquet_files(root), schema=schema).read()


def wal_files(data_dir: Path) -> list[Path]:
    """The WAL's segments (a crash also leaves the writer's spare, walwriter.Spare, which recovery removes)."""
    return sorted((data_dir / "wal").glob("*.wal"))


def snapshot_tree(data_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data_dir)): p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file()}


# --- appending and rolling ---


def test_appends_are_durable_and_read_back_with_the_exact_schema(tmp_path):
    data = tmp_path / "data"
    sent = [
        make_event(credits=Decimal("2.25"), usage_estimated=True),
        make_event(T0 + timedelta(days=1), provider_cost_usd=Decimal("0.000000001"), error_code="boom"),
        make_event(T0 + timedelta(days=1, hours=1), api_key_id=None, status="error"),
    ]
    transcripts = make_transcripts(sent[0], 3)

    async def body(log):
        seqs = [await log.submit(sent[0], transcripts)]
        seqs += await asyncio.gather(*(log.submit(e) for e in sent[1:]))
        return seqs

    seqs = run_log(data, body)

    assert sorted(seqs) == [1, 2, 3]
    assert [e["seq"] for e in sent] == seqs
    assert wal_files(data) == []
    files = parquet_files(data / "events")
    assert [f.parent.name for f in files] == ["event_date=2026-03-14", "event_date=2026-03-15"]
    assert len({f.name for f in files}) == 1  # one segment: one name, one file per date
    for f in files:
        assert pq.read_schema(f).equals(EVENT_SCHEMA)
    rows = {r["event_id"]: r for r in read_all(data / "events").to_pylist()}
    assert set(rows) == {e["event_id"] for e in sent}
    for event in sent:
        row = rows[event["event_id"]]
        assert row["event_date"] == event["occurred_at"].date()
        assert row["writer_id"] == "api"
        for column in EVENT_SCHEMA.names:
            assert row[column] == event.get(column), column

    (tfile,) = parquet_files(data / "transcripts")
    assert tfile.parent.name == "event_date=2026-03-14"
    assert pq.read_schema(tfile).equals(TRANSCRIPT_SCHEMA)
    stored = sorted(pq.read_table(tfile).to_pylist(), key=lambda r: r["position"])
    assert [r["content"] for r in stored] == [t["content"] for t in transcripts]
    assert {r["event_id"] for r in stored} == {sent[0]["event_id"]}
    assert {r["event_date"] for r in stored} == {date(2026, 3, 14)}

    con = duckdb.connect()
    got = con.sql(
        f"select event_date, count(*) from read_parquet('{data}/events/**/*.parquet', hive_partitioning=true) "
        "group by event_date order by event_date"
    ).fetchall()
    assert got == [(date(2026, 3, 14), 1), (date(2026, 3, 15), 2)]
    columns = [
        r[0]
        for r in con.sql(
            f"describe select * from read_parquet('{data}/events/**/*.parquet', hive_partitioning=true)"
        ).fetchall()
    ]
    assert columns.count("event_date") == 1
    assert columns == EVENT_SCHEMA.names


def test_money_is_quantised_half_even_and_bad_events_are_refused(tmp_path):
    async def body(log):
        event = make_event(credits=Decimal("0.0000025"), provider_cost_usd=Decimal("1.2345678905"))
        await log.submit(event)
        assert event["credits"] == Decimal("0.000002")
        assert event["provider_cost_usd"] == Decimal("1.234567890")
        with pytest.raises(TypeError):
            await log.submit(make_event(credits=1.5))
        with pytest.raises(ValueError):
            await log.submit(make_event(at=datetime(2026, 3, 14, 9, 30)))
        with pytest.raises(ValueError):
            await log.submit(make_event(provider_cost_usd=Decimal("1e12")))
        for unstorable in ("a lot", Decimal("NaN"), Decimal("-Infinity"), Decimal("999999999999.9999995")):
            with pytest.raises(ValueError):
                await log.submit(make_event(credits=unstorable))
        with pytest.raises(TypeError):
            await log.submit(make_event(context={1, 2}))
        return await log.submit(make_event())

    assert run_log(tmp_path, body) == 2  # refused events take no seq
    table = read_all(tmp_path / "events")
    assert table.num_rows == 2
    assert sorted(table["seq"].to_pylist()) == [1, 2]


def test_a_value_arrow_refuses_does_not_block_the_roll(tmp_path):
    async def body(log):
        await log.submit(make_event(input_tokens="lots", latency_ms=2**63))
        await log.submit(make_event(output_tokens=7))

    run_log(tmp_path, body)
    assert wal_files(tmp_path) == []
    rows = sorted(read_all(tmp_path / "events").to_pylist(), key=lambda r: r["seq"])
    assert [r["input_tokens"] for r in rows] == [None, 120]
    assert [r["latency_ms"] for r in rows] == [None, 12]
    assert rows[1]["output_tokens"] == 7
    assert rows[0]["credits"] == Decimal("1.5")


def test_seqs_are_dense_and_increase_across_restarts(tmp_path):
    async def body(log):
        return await asyncio.gather(*(log.submit(make_event()) for _ in range(50)))

    first = run_log(tmp_path, body)
    assert sorted(first) == list(range(1, 51))
    assert EventLog(tmp_path, "api").recover() == 50
    second = run_log(tmp_path, body)
    assert sorted(second) == list(range(51, 101))
    assert EventLog(tmp_path, "other").recover() == 0  # seq is per writer
    table = read_all(tmp_path / "events")
    assert sorted(table["seq"].to_pylist()) == list(range(1, 101))
    assert table.num_rows == len(set(table["event_id"].to_pylist()))


def test_concurrent_appends_share_batches(tmp_path):
    async def body(log):
        await asyncio.gather(*(log.submit(make_event()) for _ in range(200)))
        return log

    log = run_log(tmp_path, body)
    assert log.events_written == 200
    assert log.batches < 200
    assert log.write_seconds_total > 0
    assert log.write_errors == 0


def test_segments_are_opened_for_synchronous_writes(tmp_path):
    """A batch's write returns once its data is on disk (O_DSYNC): no fsync follows it, so without the flag an
    acknowledged event could be lost in a crash."""

    async def body(log):
        await log.submit(make_event())
        # The writer process's descriptor of the segment, and its flags (octal) as the kernel shows them.
        fds = Path(f"/proc/{log._writer.pid}/fd")
        (fd,) = [fd.name for fd in fds.iterdir() if os.readlink(fd) == str(log._seg_path)]
        flags = Path(f"/proc/{log._writer.pid}/fdinfo/{fd}").read_text().split("flags:")[1].split()[0]
        return int(flags, 8)

    assert run_log(tmp_path, body) & os.O_DSYNC == os.O_DSYNC


def test_a_burst_of_appends_resumed_by_one_batch_is_split(tmp_path):
    """Callers that append again as soon as their append returns: after the first batch, their appends are
    written in two halves, one on disk while the other is encoded, every seq still dense and in order."""
    sent = []

    async def body(log):
        async def caller():
            for _ in range(5):
                event = make_event()
                sent.append(event)
                assert await log.submit(event) == event["seq"]

        await asyncio.gather(*(caller() for _ in range(128)))
        return log

    log = run_log(tmp_path, body)
    assert log.events_written == 640
    assert log.batches > 5  # the first batch holds all 128; the rest are split
    rows = read_all(tmp_path / "events")
    assert sorted(rows["seq"].to_pylist()) == list(range(1, 641))
    assert dict(zip(rows["event_id"].to_pylist(), rows["seq"].to_pylist(), strict=True)) == {
        e["event_id"]: e["seq"] for e in sent
    }


def test_rolls_by_size(tmp_path):
    async def body(log):
        for _ in range(4):
            await log.submit(make_event())

    run_log(tmp_path, body, roll_bytes=1, roll_age_s=3600)
    names = [f.name for f in parquet_files(tmp_path / "events")]
    assert names == [f"api-{n:012d}-{n:012d}.parquet" for n in range(1, 5)]


def test_one_segment_without_a_roll_trigger(tmp_path):
    async def body(log):
        for _ in range(4):
            await log.submit(make_event())

    run_log(tmp_path, body, roll_bytes=1 << 30, roll_age_s=3600)
    assert [f.name for f in parquet_files(tmp_path / "events")] == ["api-000000000001-000000000004.parquet"]


def test_rolls_by_age_while_running(tmp_path):
    async def body(log):
        await log.submit(make_event())
        for _ in range(500):
            if log.rolls:
                break
            await asyncio.sleep(0.01)
        return parquet_files(tmp_path / "events")

    (rolled,) = run_log(tmp_path, body, roll_bytes=1 << 30, roll_age_s=0.05)
    assert rolled.name == "api-000000000001-000000000001.parquet"


def test_append_after_close_is_refused(tmp_path):
    async def main():
        log = EventLog(tmp_path, "api")
        log.recover()
        with pytest.raises(LogUnavailable):
            await log.submit(make_event())
        await log.start()
        await log.submit(make_event())
        await log.close()
        with pytest.raises(LogUnavailable):
            await log.submit(make_event())

    asyncio.run(main())


async def awaited(future: asyncio.Future):
    """A caller waiting for its append, as a request does: cancelling it cancels what it awaits."""
    return await future


def test_a_cancelled_append_is_still_written(tmp_path):
    """A client that goes away after its model call still used it: the event is metered all the same."""
    event = make_event()

    async def main():
        log = EventLog(tmp_path, "api")
        await log.start()  # recovers by itself when recover() was not called
        task = asyncio.create_task(awaited(log.submit(event)))
        await asyncio.sleep(0)  # enqueued
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await log.submit(make_event()) == 2
        await log.close()

    asyncio.run(main())
    assert event["event_id"] in read_all(tmp_path / "events")["event_id"].to_pylist()


def test_on_done_tells_a_cancelled_caller_s_seq_and_a_failed_batch(tmp_path, disk):
    """Serving counts an event from on_done: it must run for a caller gone away, and say when nothing counts."""
    done: list[tuple[str, int | None]] = []

    async def body(log):
        first = make_event()
        task = asyncio.create_task(awaited(log.submit(first, on_done=lambda seq: done.append(("first", seq)))))
        await asyncio.sleep(0)
        task.cancel()
        assert await log.submit(make_event(), on_done=lambda seq: done.append(("second", seq))) == 2
        assert done == [("first", 1), ("second", 2)] and first["seq"] == 1
        disk.fail(write="refuse")
        with pytest.raises(LogUnavailable):
            await log.submit(make_event(), on_done=lambda seq: done.append(("failed", seq)))
        assert done[-1] == ("failed", None)
        disk.heal()
        with pytest.raises(ValueError):  # refused at once: on_done is never called
            await log.submit(make_event(occurred_at=None), on_done=lambda seq: done.append(("refused", seq)))
        assert len(done) == 3

    run_log(tmp_path, body, roll_bytes=1 << 30, roll_age_s=3600)


# --- recovery ---


def test_recovery_rolls_a_crashed_wal_once_and_cuts_a_torn_tail(tmp_path):
    async def body(log):
        await asyncio.gather(*(log.submit(make_event()) for _ in range(30)))
        events = [make_event() for _ in range(5)]
        for event in events:
            await log.submit(event, make_transcripts(event))
        return [e["event_id"] for e in events]

    with_transcripts = run_and_crash(tmp_path, body)
    (segment,) = wal_files(tmp_path)
    assert segment.name == "api.000000000001.wal"
    assert parquet_files(tmp_path) == []
    with open(segment, "ab") as f:  # a batch whose write was cut short
        f.write(eventlog._HEADER.pack(5000, 1234) + eventlog._FIRST_SEQ.pack(36) + b'{"event":{"event_id"')

    assert EventLog(tmp_path, "api").recover() == 35
    assert wal_files(tmp_path) == []
    events = read_all(tmp_path / "events")
    assert sorted(events["seq"].to_pylist()) == list(range(1, 36))
    transcripts = read_all(tmp_path / "transcripts", TRANSCRIPT_SCHEMA)
    assert sorted(set(transcripts["event_id"].to_pylist())) == sorted(with_transcripts)
    assert transcripts.num_rows == 10

    before = snapshot_tree(tmp_path)
    assert EventLog(tmp_path, "api").recover() == 35
    assert snapshot_tree(tmp_path) == before


def test_recovery_reads_a_segment_made_ahead_up_to_its_zeros_and_removes_the_spare(tmp_path, caplog):
    """A segment that was the writer's spare (walwriter.Spare) ends in zeros: not a torn tail, nothing lost."""

    async def body(log):
        return await asyncio.gather(*(log.submit(make_event()) for _ in range(12)))

    assert sorted(run_and_crash(tmp_path, body)) == list(range(1, 13))
    (segment,) = wal_files(tmp_path)
    with open(segment, "ab") as f:
        f.write(bytes(1 << 16))
    walwriter.spare_path(tmp_path / "wal", "api").write_bytes(bytes(1024))  # as a crash leaves it

    with caplog.at_level(logging.WARNING, logger="serving.eventlog"):
        assert EventLog(tmp_path, "api").recover() == 12
    assert "torn" not in caplog.text
    assert sorted(read_all(tmp_path / "events")["seq"].to_pylist()) == list(range(1, 13))
    assert list((tmp_path / "wal").iterdir()) == []


def _crash_with_batches(data_dir: Path) -> dict[str, int]:
    """Three batches (1, 4 and 3 appends), then a crash: event_id -> the seq its append returned."""

    async def body(log):
        batches = [[make_event()], [make_event() for _ in range(4)], [make_event() for _ in range(3)]]
        seqs = {}
        for batch in batches:
            returned = await asyncio.gather(*(log.submit(e, make_transcripts(e, 1)) for e in batch))
            seqs.update(zip((e["event_id"] for e in batch), returned, strict=True))
        assert log.batches == 3
        return seqs

    return run_and_crash(data_dir, body)


def test_recovery_gives_each_event_of_a_batch_the_seq_its_append_returned(tmp_path):
    seqs = _crash_with_batches(tmp_path)
    assert sorted(seqs.values()) == list(range(1, 9))

    assert EventLog(tmp_path, "api").recover() == 8
    events = read_all(tmp_path / "events")
    assert dict(zip(events["event_id"].to_pylist(), events["seq"].to_pylist(), strict=True)) == seqs
    transcripts = read_all(tmp_path / "transcripts", TRANSCRIPT_SCHEMA)
    assert sorted(transcripts["event_id"].to_pylist()) == sorted(seqs)


@pytest.mark.parametrize("damage", ["torn", "corrupt"])
def test_recovery_drops_a_damaged_last_batch_whole(tmp_path, damage):
    """A batch is acknowledged only after all of it is on disk: a torn or corrupt one counts for nothing."""
    seqs = _crash_with_batches(tmp_path)
    (segment,) = wal_files(tmp_path)
    data = bytearray(segment.read_bytes())
    assert data.rindex(eventlog._FIRST_SEQ.pack(6)) < len(data) - 20  # the damage hits the last batch only
    if damage == "torn":
        del data[-20:]
    else:
        data[-20] ^= 0x01  # one bit flipped
    segment.write_bytes(bytes(data))

    assert EventLog(tmp_path, "api").recover() == 5
    assert wal_files(tmp_path) == []
    events = read_all(tmp_path / "events")
    kept = {event_id: seq for event_id, seq in seqs.items() if seq <= 5}
    assert dict(zip(events["event_id"].to_pylist(), events["seq"].to_pylist(), strict=True)) == kept
    assert read_all(tmp_path / "transcripts", TRANSCRIPT_SCHEMA).num_rows == 5

    async def body(log):  # the dropped batch's seqs are handed out again: they were never acknowledged
        return await log.submit(make_event())

    assert run_log(tmp_path, body) == 6


def test_a_batch_too_large_for_one_record_is_written_as_several(tmp_path, monkeypatch):
    monkeypatch.setattr(eventlog, "_MAX_RECORD", 2000)
    monkeypatch.setattr(eventlog, "_MAX_LINES", 2000 - eventlog._FIRST_SEQ.size)
    events = [make_event() for _ in range(10)]

    async def body(log):
        seqs = await asyncio.gather(*(log.submit(e) for e in events))
        with pytest.raises(ValueError):
            await log.submit(make_event(error_code="x" * 2000))
        return log.batches, seqs

    batches, seqs = run_and_crash(tmp_path, body)
    assert batches == 1
    assert [b[:2] for b in eventlog._read_segment(wal_files(tmp_path)[0])[0]] == [(1, 3), (4, 3), (7, 3), (10, 1)]

    assert EventLog(tmp_path, "api").recover() == 10
    table = read_all(tmp_path / "events")
    assert dict(zip(table["event_id"].to_pylist(), table["seq"].to_pylist(), strict=True)) == {
        e["event_id"]: seq for e, seq in zip(events, seqs, strict=True)
    }


def test_rolling_a_segment_again_after_a_crash_rewrites_the_same_files(tmp_path):
    async def body(log):
        for i in range(6):
            await log.submit(make_event(T0 + timedelta(hours=10 * i)))

    run_and_crash(tmp_path, body)
    (segment,) = wal_files(tmp_path)
    saved = segment.read_bytes()
    EventLog(tmp_path, "api").recover()
    rolled = snapshot_tree(tmp_path)
    assert len(parquet_files(tmp_path / "events")) == 3  # 60 hours: three dates
    segment.write_bytes(saved)  # died after the Parquet files, before deleting the segment

    assert EventLog(tmp_path, "api").recover() == 6
    assert snapshot_tree(tmp_path) == rolled
    assert sorted(read_all(tmp_path / "events")["seq"].to_pylist()) == list(range(1, 7))


def test_an_interrupted_roll_leaves_no_file_a_reader_can_see(tmp_path, monkeypatch):
    async def body(log):
        for _ in range(3):
            await log.submit(make_event())

    run_and_crash(tmp_path, body)

    def die(src, dst):
        raise OSError(errno.EIO, "crash before the rename")

    monkeypatch.setattr(eventlog.os, "replace", die)
    with pytest.raises(OSError):
        EventLog(tmp_path, "api").recover()
    monkeypatch.undo()
    temps = list((tmp_path / "events").rglob(".*.tmp"))
    assert len(temps) == 1
    assert temps[0].name == ".api-000000000001-000000000003.parquet.tmp"
    assert parquet_files(tmp_path) == []
    assert len(wal_files(tmp_path)) == 1  # nothing durable yet, so the segment stays

    assert EventLog(tmp_path, "api").recover() == 3
    assert list(tmp_path.rglob("*.tmp")) == []
    assert wal_files(tmp_path) == []
    assert sorted(read_all(tmp_path / "events")["seq"].to_pylist()) == [1, 2, 3]


def test_recovery_ignores_other_writers_segments(tmp_path):
    async def body(log):
        await log.submit(make_event())

    run_and_crash(tmp_path, body, writer_id="api-2")
    assert EventLog(tmp_path, "api").recover() == 0
    assert [p.name for p in wal_files(tmp_path)] == ["api-2.000000000001.wal"]
    assert EventLog(tmp_path, "api-2").recover() == 1
    assert wal_files(tmp_path) == []


# --- the disk refusing writes ---


def test_a_failed_write_fails_its_batch_and_the_log_recovers_by_itself(tmp_path, disk):
    async def body(log):
        assert await log.submit(make_event()) == 1
        size = os.path.getsize(log._seg_path)
        disk.fail(write="refuse")
        failed = [make_event() for _ in range(5)]
        results = await asyncio.gather(*(log.submit(e) for e in failed), return_exceptions=True)
        assert all(isinstance(r, LogUnavailable) for r in results)
        assert os.path.getsize(log._seg_path) == size
        assert log.write_errors == 1
        disk.heal()
        assert await log.submit(make_event()) == 2  # the failed batch took no seq
        return {e["event_id"] for e in failed}

    failed = run_log(tmp_path, body, roll_bytes=1 << 30, roll_age_s=3600)
    table = read_all(tmp_path / "events")
    assert sorted(table["seq"].to_pylist()) == [1, 2]
    assert not failed & set(table["event_id"].to_pylist())


def test_a_half_written_batch_is_cut_off(tmp_path, disk):
    async def body(log):
        await log.submit(make_event())
        size = os.path.getsize(log._seg_path)
        disk.fail(write="half")
        with pytest.raises(LogUnavailable):
            await log.submit(make_event())
        assert os.path.getsize(log._seg_path) == size
        disk.heal()
        return await log.submit(make_event())

    assert run_log(tmp_path, body, roll_bytes=1 << 30, roll_age_s=3600) == 2
    assert sorted(read_all(tmp_path / "events")["seq"].to_pylist()) == [1, 2]


def test_an_unsynced_batch_that_cannot_be_cut_off_yet_is_cut_before_the_next_write(tmp_path, disk):
    """The batch reached the file but its synchronous write failed (its data not known to be on disk), and the
    truncation fails too (read-only now): its records must never count, though they are whole and their CRCs
    check out. Checked from the WAL, as a crash would leave it."""
    failed = make_event()

    async def body(log):
        await log.submit(make_event())
        size = os.path.getsize(log._seg_path)
        disk.fail(write="after", truncate=True)
        with pytest.raises(LogUnavailable):
            await log.submit(failed)
        assert os.path.getsize(log._seg_path) > size  # still there
        with pytest.raises(LogUnavailable):  # still cannot cut it: refuse rather than write after it
            await log.submit(make_event())
        disk.heal()
        assert await log.submit(make_event()) == 2
        return log.write_errors

    assert run_and_crash(tmp_path, body) == 2
    assert EventLog(tmp_path, "api").recover() == 2
    table = read_all(tmp_path / "events")
    assert sorted(table["seq"].to_pylist()) == [1, 2]
    assert failed["event_id"] not in table["event_id"].to_pylist()


def test_a_segment_that_cannot_be_created_fails_the_batch_only(tmp_path, disk):
    async def body(log):
        disk.fail(open=True)
        with pytest.raises(LogUnavailable):
            await log.submit(make_event())
        assert log._seg_path is None
        disk.heal()
        return await log.submit(make_event())

    assert run_log(tmp_path, body) == 1


def test_a_writer_process_that_dies_mid_batch_fails_it_and_the_next_one_cuts_it_off(tmp_path, disk):
    """The batch in flight fails (its bytes may be in the segment); a new writer reopens the segment, cuts them
    off, and goes on; a writer killed between batches is replaced without failing any."""
    failed = make_event()

    async def body(log):
        assert await log.submit(make_event()) == 1
        size, first = os.path.getsize(log._seg_path), log._writer.pid
        disk.fail(write="die")
        with pytest.raises(LogUnavailable):
            await log.submit(failed)
        disk.heal()
        assert await log.submit(make_event()) == 2
        assert log._writer.pid != first
        assert os.path.getsize(log._seg_path) > size
        log._writer.kill()
        await asyncio.sleep(0.2)  # the log sees its socket close
        assert await log.submit(make_event()) == 3
        return log.write_errors

    assert run_log(tmp_path, body, roll_bytes=1 << 30, roll_age_s=3600) == 1
    table = read_all(tmp_path / "events")
    assert sorted(table["seq"].to_pylist()) == [1, 2, 3]
    assert failed["event_id"] not in table["event_id"].to_pylist()


# --- reading back ---


def _write_history(data_dir: Path) -> list[dict]:
    """Events of two writers over three days: api seq 1..6, api-2 seq 1..3."""
    events = []

    async def write(log):
        for i in range(6 if log.writer_id == "api" else 3):
            event = make_event(T0 + timedelta(hours=12 * i), tenant_id=f"ten_{i % 2}")
            await log.submit(event)
            events.append(dict(event))

    run_log(data_dir, write, writer_id="api", roll_bytes=1)
    run_log(data_dir, write, writer_id="api-2")
    return events


def test_read_events_after_honours_watermark_and_since(tmp_path):
    events = _write_history(tmp_path)
    since = T0 + timedelta(hours=12)
    watermark = {"api": 3}

    table = read_events_after(tmp_path / "events", watermark, since)
    expected = {
        e["event_id"] for e in events if e["occurred_at"] >= since and e["seq"] > watermark.get(e["writer_id"], 0)
    }
    assert set(table["event_id"].to_pylist()) == expected
    assert len(expected) == 5  # api 4, 5, 6 and api-2 2, 3
    assert table.schema.equals(EVENT_SCHEMA)

    assert read_events_after(tmp_path / "events", {}, EPOCH).num_rows == 9
    assert read_events_after(tmp_path / "events", {"api": 6, "api-2": 3}, EPOCH).num_rows == 0
    late = read_events_after(tmp_path / "events", {}, T0 + timedelta(days=2), columns=["seq", "writer_id"])
    assert late.column_names == ["seq", "writer_id"]
    assert sorted(late.to_pylist(), key=lambda r: r["seq"]) == [
        {"seq": 5, "writer_id": "api"},
        {"seq": 6, "writer_id": "api"},
    ]


def test_read_events_after_deduplicates_on_event_id(tmp_path):
    _write_history(tmp_path)
    for f in parquet_files(tmp_path / "events")[:2]:
        shutil.copy(f, f.with_name("copy-" + f.name))
    assert len(parquet_files(tmp_path / "events")) == 6 + 2 + 2  # api: one per event; api-2: one per date
    table = read_events_after(tmp_path / "events", {}, EPOCH, columns=["seq"])
    assert table.column_names == ["seq"]
    assert table.num_rows == 9


def test_read_events_after_without_events(tmp_path):
    table = read_events_after(tmp_path / "nothing", {}, EPOCH, columns=["event_id", "credits"])
    assert table.num_rows == 0
    assert table.column_names == ["event_id", "credits"]


# --- idempotency records ---


def idem(key: str, created_at: datetime, tenant_id: str = "ten_a") -> dict:
    return {
        "tenant_id": tenant_id,
        "key": key,
        "request_hash": "h-" + key,
        "status_code": 200,
        "body": '{"id": "chatcmpl-1", "choices": []}',
        "created_at": created_at,
    }


def test_idempotency_records_survive_a_restart_and_expire(tmp_path):
    now = datetime.now(UTC)
    records = {
        "fresh": idem("fresh", now - timedelta(minutes=5)),
        "stale": idem("stale", now - timedelta(hours=2)),
        "other-tenant": idem("fresh", now, tenant_id="ten_b"),
    }

    async def body(log):
        for record in records.values():
            await log.submit(make_event(), idempotency=record)

    run_log(tmp_path, body, idempotency_ttl_h=1)
    (stored,) = parquet_files(tmp_path / "idempotency")
    assert pq.read_schema(stored).equals(IDEMPOTENCY_SCHEMA)

    log = EventLog(tmp_path, "api", idempotency_ttl_h=1)
    log.recover()
    loaded = log.load_idempotency()
    assert set(loaded) == {("ten_a", "fresh"), ("ten_b", "fresh")}
    got = loaded[("ten_a", "fresh")]
    for field in ("request_hash", "status_code", "body", "created_at"):
        assert got[field] == records["fresh"][field]
    assert got["event_id"]


def test_idempotency_records_are_read_from_the_wal_too(tmp_path):
    async def body(log):
        await log.submit(make_event(), idempotency=idem("k1", datetime.now(UTC)))
        return set(log.load_idempotency())

    assert run_log(tmp_path, body, roll_bytes=1 << 30, roll_age_s=3600) == {("ten_a", "k1")}

    run_and_crash(tmp_path, lambda log: log.submit(make_event(), idempotency=idem("k2", datetime.now(UTC))))
    log = EventLog(tmp_path, "api")
    assert set(log.load_idempotency()) == {("ten_a", "k1"), ("ten_a", "k2")}  # before recovery too
    log.recover()
    assert set(log.load_idempotency()) == {("ten_a", "k1"), ("ten_a", "k2")}


def test_old_idempotency_files_are_deleted_at_roll_time(tmp_path):
    now = datetime.now(UTC)

    async def body(log):
        await log.submit(make_event(), idempotency=idem("old", now - timedelta(hours=1 + 25)))
        await log.submit(make_event(), idempotency=idem("old-but-kept", now - timedelta(hours=20)))
        await log.submit(make_event(), idempotency=idem("old-too", now - timedelta(hours=27)))

    run_log(tmp_path, body, roll_bytes=1, idempotency_ttl_h=1)
    names = [f.name for f in parquet_files(tmp_path / "idempotency")]
    assert names == ["api-000000000002-000000000002.parquet"]  # newest record within TTL + 1 day
    assert len(parquet_files(tmp_path / "events")) == 3
    assert EventLog(tmp_path, "api", idempotency_ttl_h=1).load_idempotency() == {}
