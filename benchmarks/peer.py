"""LiteLLM's proxy as a peer: `litellm[proxy]` in an environment of its own (never a project dependency),
serving a `mock_response` model, offline, one worker, master key, no database (so no budgets), under the
same wrk load as chatmeter in the same run."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks.api import BODY, wrk
from chatmeter.serve_process import free_port

PEER_ENV = Path(os.environ.get("BENCH_PEER_ENV", Path.home() / ".cache" / "chatmeter" / "litellm-venv"))
MASTER_KEY = "sk-bench-master"
CONFIG = f"""
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_key: sk-not-used
      mock_response: "To reset your password, open Settings, choose Security and follow the link we email you."
general_settings:
  master_key: {MASTER_KEY}
litellm_settings:
  telemetry: false
"""


def ensure_env() -> Path:
    litellm = PEER_ENV / "bin" / "litellm"
    if not litellm.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_ENV)], check=True)
        subprocess.run([str(PEER_ENV / "bin" / "pip"), "install", "-q", "uv"], check=True)
        python = str(PEER_ENV / "bin" / "python")
        subprocess.run(
            [str(PEER_ENV / "bin" / "uv"), "pip", "install", "-q", "--python", python, "litellm[proxy]"], check=True
        )
    return litellm


def bench_peer(workdir: Path, metered_rps: float, repeats: int) -> dict:
    try:
        litellm = ensure_env()
    except (subprocess.CalledProcessError, OSError) as exc:
        return {"peer.litellm_rps": None, "peer.ratio_vs_litellm": None, "peer.error": f"install failed: {exc}"}
    config = workdir / "litellm.yaml"
    config.write_text(CONFIG)
    port = free_port()
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    proc = subprocess.Popen(
        [str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):
            if proc.poll() is not None:
                return {
                    "peer.litellm_rps": None,
                    "peer.ratio_vs_litellm": None,
                    "peer.error": f"litellm exited: {proc.stderr.read().decode()[-500:]}",
                }
            try:
                r = httpx.post(
                    f"{url}/v1/chat/completions",
                    json=BODY,
                    timeout=5,
                    headers={"Authorization": f"Bearer {MASTER_KEY}"},
                )
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            return {"peer.litellm_rps": None, "peer.ratio_vs_litellm": None, "peer.error": "litellm did not answer"}
        runs = sorted(
            (wrk(url, "/v1/chat/completions", MASTER_KEY, BODY, workdir) for _ in range(repeats)),
            key=lambda r: r["rps"],
        )
        median = runs[len(runs) // 2]
        return {
            "peer.litellm_rps": round(median["rps"], 1),
            "peer.litellm_p50_ms": median["p50_ms"],
            "peer.ratio_vs_litellm": round(metered_rps / median["rps"], 1) if median["rps"] else None,
            "peer.litellm_non_2xx": sum(r["non_2xx"] for r in runs),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
