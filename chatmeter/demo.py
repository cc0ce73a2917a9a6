"""`chatmeter demo`: tenants on several plans, traffic through the real HTTP API (OpenAI SDK and widget),
a tenant refused at its limit, and a printed summary. Talks to a `chatmeter serve` it starts, over HTTP."""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from chatmeter.settings import Settings

MARKER = ".chatmeter-demo"
TENANTS = [  # name, plan, API calls, widget turns
    ("Acme Support", "free", 6, 3),
    ("Globex Retail", "pro", 10, 4),
    ("Initech Labs", "enterprise", 12, 2),
    ("Umbrella Clinics", "team", 10, 3),
    ("Hooli Studio", "credits_starter", 8, 2),
]
PROMPTS = [
    "Where is my order 1042? It was due yesterday.",
    "Can you summarise your refund policy in two sentences?",
    "What are your opening hours on public holidays?",
    "Please check_inventory for sku A-17 before I order.",
    "Write a short friendly reply to a customer who lost their password.",
    "How do I upgrade my subscription to the yearly plan?",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_data_dir(data_dir: Path, fresh: bool) -> None:
    if data_dir.exists() and any(data_dir.iterdir()):
        if not (data_dir / MARKER).exists():
            raise SystemExit(f"{data_dir} holds data that is not the demo's; point CHATMETER_DATA_DIR elsewhere")
        if fresh:
            shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER).write_text("this data dir belongs to `chatmeter demo`; it may wipe it\n")


class Server:
    """`chatmeter serve` in a child process."""

    def __init__(self, env: dict[str, str]):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "chatmeter.cli", "serve", "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the API did not start:\n{self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise SystemExit("the API did not answer /healthz within 60 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _chat_traffic(url: str, api_key: str, calls: int, tenant_index: int) -> tuple[int, int]:
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key=api_key, max_retries=0)
    tokens = ok = 0
    for i in range(calls):
        prompt = PROMPTS[(i + tenant_index) % len(PROMPTS)]
        user = f"user-{(i % 3) + 1}"
        messages = [
            {"role": "system", "content": "You are a concise support assistant."},
            {"role": "user", "content": f"{prompt} (ticket {tenant_index}-{i})"},
        ]
        if i % 2:
            stream = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=messages,
                max_tokens=200,
                user=user,
                stream=True,
                stream_options={"include_usage": True},
            )
            for chunk in stream:
                if chunk.usage:
                    tokens += chunk.usage.total_tokens
        else:
            response = client.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=200, user=user)
            tokens += response.usage.total_tokens
        ok += 1
    return ok, tokens


def _widget_traffic(url: str, widget_key: str, turns: int) -> int:
    headers = {"X-Widget-Key": widget_key, "Origin": "https://shop.example"}
    session = None
    tokens = 0
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        for i in range(turns):
            body = {"message": PROMPTS[i % len(PROMPTS)], "user_id": "visitor-7"}
            if session:
                body["session_id"] = session
            r = client.post("/chat/message", json=body)
            r.raise_for_status()
            session = r.json()["session_id"]
            tokens += r.json()["usage"]["total_tokens"]
        client.post("/chat/end", json={"session_id": session})
    return tokens


def _drive_to_limit(url: str, api_key: str) -> dict:
    """Send calls until the API refuses one; return the refusal."""
    for i in range(500):
        r = httpx.post(
            f"{url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=30,
            json={
                "model": "gpt-4o-mini",
                "max_tokens": 400,
                "messages": [{"role": "user", "content": f"Tell me a long story, part {i}."}],
            },
        )
        if r.status_code == 429:
            return {
                "status": 429,
                "headers": {k: r.headers[k] for k in ("retry-after", "x-should-retry")},
                "body": r.json(),
            }
        r.raise_for_status()
    raise SystemExit("no refusal after 500 calls: the limit is not enforced")


def run_demo(settings: Settings, fresh: bool = True) -> int:
    data_dir = settings.data_dir.resolve()
    prepare_data_dir(data_dir, fresh)
    admin = secrets.token_urlsafe(24)
    env = dict(
        os.environ,
        CHATMETER_DATA_DIR=str(data_dir),
        CHATMETER_ADMIN_TOKEN=admin,
        CHATMETER_PROVIDER="simulated",
        CHATMETER_WAL_ROLL_AGE_S="1",
    )
    started = time.monotonic()
    print(f"chatmeter demo — data dir {data_dir}")
    server = Server(env)
    print(f"API up at {server.url}")
    summary = {"tenants": []}
    try:
        admin_http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        for index, (name, plan, calls, turns) in enumerate(TENANTS):
            t = admin_http.post("/admin/tenants", json={"name": name, "plan": plan}).json()
            ok, tokens = _chat_traffic(server.url, t["api_key"], calls, index)
            tokens += _widget_traffic(server.url, t["widget_key"], turns)
            summary["tenants"].append(
                {"name": name, "plan": plan, "tenant_id": t["tenant_id"], "api_key": t["api_key"], "calls": ok + turns}
            )
        small = admin_http.post("/admin/tenants", json={"name": "Tiny Free Trial", "plan": "free"}).json()
        refusal = _drive_to_limit(server.url, small["api_key"])
        summary["tenants"].append(
            {
                "name": "Tiny Free Trial",
                "plan": "free",
                "tenant_id": small["tenant_id"],
                "api_key": small["api_key"],
                "calls": None,
            }
        )
        print("\nA free tenant at its limit is refused:")
        print(
            f"  HTTP {refusal['status']}  Retry-After: {refusal['headers']['retry-after']}  "
            f"x-should-retry: {refusal['headers']['x-should-retry']}"
        )
        print("  " + json.dumps(refusal["body"]))
        print(f"\n{'tenant':22} {'plan':16} {'tokens this month':>18} {'limit':>8} {'level':>9}")
        for t in summary["tenants"]:
            usage = httpx.get(f"{server.url}/v1/usage", headers={"Authorization": f"Bearer {t['api_key']}"}).json()
            t["usage"] = usage
            limit = usage["monthlyLimit"] if usage["monthlyLimit"] is not None else "-"
            print(f"{t['name']:22} {t['plan']:16} {usage['monthlyUsage']:>18} {limit:>8} {usage['warningLevel']:>9}")
    finally:
        server.stop()
    events = _count_events(data_dir)
    print(f"\nusage events in the Parquet log: {events}  ({data_dir / 'events'})")
    print(f"transcripts: {data_dir / 'transcripts'}")
    print(f"done in {time.monotonic() - started:.1f} s")
    return 0


def _count_events(data_dir: Path) -> int:
    import pyarrow.dataset as ds

    from chatmeter.schemas import EVENT_SCHEMA

    root = data_dir / "events"
    if not root.exists():
        return 0
    table = ds.dataset(root, format="parquet", partitioning="hive", schema=EVENT_SCHEMA).to_table(columns=["event_id"])
    return len(set(table.column("event_id").to_pylist()))
