"""Appends under load until killed, printing each acknowledged event_id: the subject of the kill -9 test.

Usage: python eventlog_child.py DATA_DIR APPENDERS
"""

import asyncio
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from chatmeter.ids import uuid7
from serving.eventlog import EventLog


async def main(data_dir: Path, appenders: int) -> None:
    log = EventLog(data_dir, "crash", roll_bytes=48 * 1024, roll_age_s=0.02)
    log.recover()
    await log.start()

    async def appender(n: int) -> None:
        while True:
            event_id = uuid7()
            event = {
                "event_id": event_id,
                "occurred_at": datetime.now(UTC),
                "tenant_id": f"ten_{n % 3}",
                "kind": "chat",
                "status": "ok",
                "input_tokens": n,
                "credits": Decimal("0.5"),
            }
            transcript = {"message_id": uuid7(), "role": "user", "content": "hi", "position": 0}
            await log.submit(event, [transcript])
            sys.stdout.write(event_id + "\n")
            sys.stdout.flush()

    await asyncio.gather(*(appender(n) for n in range(appenders)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
