"""A disk that fails when told: the event log's real writer process (serving.walwriter) with its file steps
wrapped by faults read from a control file before each step. A full or read-only disk cannot be had here (the
tests run as root, whom permissions do not stop), so this stands in for it.

    disk = FaultyDisk(tmp_path / "disk.json")
    monkeypatch.setattr(eventlog, "WRITER_COMMAND", disk.command)   # before the log starts
    disk.fail(write="refuse")          # ENOSPC (or errno=...) before any byte; "half": half the bytes, then ENOSPC;
                                       # "after": every byte, then ENOSPC (not known to be on disk);
                                       # "die": half the bytes, then the process dies
    disk.fail(truncate=True)           # cutting a failed batch off fails too; open=True: no new segment
    disk.heal()

    python -m tests.doubles.faulty_disk CONTROL FD
"""

import errno
import json
import os
import sys
from pathlib import Path

from serving import walwriter


class FaultyDisk:
    def __init__(self, control: Path):
        self.control = control
        self.heal()

    @property
    def command(self) -> list[str]:
        return [sys.executable, "-m", "tests.doubles.faulty_disk", str(self.control)]

    def fail(self, **faults) -> None:
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(json.dumps(faults))
        os.replace(tmp, self.control)

    def heal(self) -> None:
        self.fail()


def _refused(faults: dict) -> OSError:
    code = faults.get("errno", errno.ENOSPC)
    return OSError(code, os.strerror(code))


def main() -> int:
    control = Path(sys.argv[1])
    real_open, real_write, real_truncate = walwriter._open, walwriter._write, walwriter._truncate

    def faults() -> dict:
        return json.loads(control.read_text())

    def open_(path, mode, spare=None):
        if faults().get("open"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_open(path, mode, spare)

    def write(fd, data, at):
        told = faults()
        how = told.get("write")
        if how in ("half", "die"):
            os.pwrite(fd, data[: len(data) // 2], at)
            if how == "die":
                os._exit(1)
        elif how == "after":
            real_write(fd, data, at)
        if how:
            raise _refused(told)
        real_write(fd, data, at)

    def truncate(fd, length):
        if (told := faults()).get("truncate"):
            raise _refused(told)
        real_truncate(fd, length)

    walwriter._open, walwriter._write, walwriter._truncate = open_, write, truncate
    return walwriter.main(sys.argv[2:])


if __name__ == "__main__":
    raise SystemExit(main())
