from datetime import date, timedelta

import pyarrow.parquet as pq

from chatmeter.schemas import TRANSCRIPT_SCHEMA
from orchestration.defs.retention.assets import transcript_retention
from tests.orchestration.factories import AS_OF, EventLog, event
from tests.orchestration.helpers import asset_metadata, materialize


def transcripts(settings, day: date) -> None:
    folder = settings.transcripts_dir / f"event_date={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(TRANSCRIPT_SCHEMA.empty_table(), folder / "t.parquet")


def test_old_transcripts_deleted_once_aggregated(built_copy):
    settings, info = built_copy
    old = date(2026, 10, 16)
    late = date(2026, 10, 17)
    recent = AS_OF.date() - timedelta(days=3)
    for day in (old, late, recent):
        transcripts(settings, day)
    # A late event for Oct 17 that no daily run has counted yet: that day's transcripts must stay.
    log = EventLog(settings.events_dir, next_seq=dict(info["log"].next_seq))
    log.write([event(info["team"], AS_OF.replace(month=10, day=17, hour=5), input_tokens=1, writer_id="w9")])
    result = materialize([transcript_retention], settings)
    assert result.success
    meta = asset_metadata(result, "transcript_retention")
    assert meta["deleted_days"] == [old.isoformat()]
    assert meta["kept_not_aggregated"] == [late.isoformat()]
    assert not (settings.transcripts_dir / f"event_date={old}").exists()
    assert (settings.transcripts_dir / f"event_date={late}").exists()
    assert (settings.transcripts_dir / f"event_date={recent}").exists()
    assert any(settings.events_dir.glob(f"event_date={old}/*.parquet"))  # events are kept
