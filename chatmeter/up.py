"""`chatmeter up`: the API, Dagster's webserver and daemon, and Streamlit, as child processes on loopback."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from chatmeter.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _bin(name: str) -> str:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def commands(settings: Settings, port: int, dagster_port: int, streamlit_port: int) -> dict[str, list[str]]:
    cmds = {"api": [_bin("chatmeter"), "serve", "--host", "127.0.0.1", "--port", str(port)]}
    if (ROOT / "orchestration" / "definitions.py").exists():
        module = ["-m", "orchestration.definitions"]
        cmds["dagster-webserver"] = [_bin("dagster-webserver"), *module, "-h", "127.0.0.1", "-p", str(dagster_port)]
        cmds["dagster-daemon"] = [_bin("dagster-daemon"), "run", *module]
    if (ROOT / "dashboards" / "app.py").exists():
        cmds["streamlit"] = [
            _bin("streamlit"),
            "run",
            str(ROOT / "dashboards" / "app.py"),
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(streamlit_port),
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
        ]
    return cmds


DAGSTER_YAML = """\
# Written by `chatmeter up`. DuckDB allows one writing process: runs touching the warehouse queue.
concurrency:
  pools:
    default_limit: 1
telemetry:
  enabled: false
"""


def run_all(settings: Settings, port: int, dagster_port: int, streamlit_port: int) -> int:
    env = dict(os.environ)
    env.setdefault("CHATMETER_DATA_DIR", str(settings.data_dir.resolve()))
    dagster_home = settings.data_dir.resolve() / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    if not (dagster_home / "dagster.yaml").exists():
        (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
    env.setdefault("DAGSTER_HOME", str(dagster_home))
    if (ROOT / "orchestration" / "definitions.py").exists():
        subprocess.run([_bin("chatmeter"), "pipeline", "prepare"], env=env, cwd=ROOT, check=True)
    urls = {
        "api": f"http://127.0.0.1:{port}",
        "dagster-webserver": f"http://127.0.0.1:{dagster_port}",
        "streamlit": f"http://127.0.0.1:{streamlit_port}",
    }
    procs: dict[str, subprocess.Popen] = {}
    for name, cmd in commands(settings, port, dagster_port, streamlit_port).items():
        procs[name] = subprocess.Popen(cmd, env=env, cwd=ROOT)
        if name in urls:
            print(f"{name:18} {urls[name]}")
    print(f"{'data dir':18} {settings.data_dir.resolve()}")
    print("Ctrl-C stops everything.")

    stopping = False

    def stop(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    while not stopping:
        for name, proc in procs.items():
            if proc.poll() is not None:
                print(f"{name} exited with {proc.returncode}; stopping the rest", file=sys.stderr)
                code, stopping = proc.returncode or 1, True
                break
        time.sleep(0.5)
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return code
