"""`chatmeter demo`: the whole loop on embedded defaults. Tenants on several plans and live traffic through the
real HTTP API (OpenAI SDK and widget) of a `chatmeter serve` it starts; a tenant refused at its limit; a month
of backdated history for more tenants; the pipeline (daily usage, costs, forecasts, invoices, a limit
snapshot); the running API refusing a tenant the snapshot puts over its limit; a printed summary."""

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx

from chatmeter.catalog import CatalogStore
from chatmeter.history import TenantHistory, backfill
from chatmeter.serve_process import ServeProcess
from chatmeter.settings import Settings
from chatmeter.store import Store

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


def prepare_data_dir(data_dir: Path, fresh: bool) -> None:
    if data_dir.exists() and any(data_dir.iterdir()):
        if not (data_dir / MARKER).exists():
            raise SystemExit(f"{data_dir} holds data that is not the demo's; point CHATMETER_DATA_DIR elsewhere")
        if fresh:
            shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER).write_text("this data dir belongs to `chatmeter demo`; it may wipe it\n")


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


# Tenants with a month and more of history: name, plan, days ago they started, tokens a day.
HISTORY = [
    ("Northwind Traders", "pro", 40, 1_200),
    ("Contoso Health", "team", 40, 20_000),
    ("Fabrikam Media", "scale", 40, 90_000),
    ("Wide World Importers", "credits_professional", 40, 150_000),
    ("Adventure Works", "payg", 40, 30_000),
    ("Tailspin Toys", "free", 40, 250),
    ("Litware", "free", 10, 1_500),  # past its 10,000 a month: the snapshot makes the API refuse it
]


def backfill_history(settings: Settings, now: datetime) -> tuple[dict[str, str], dict[str, str], int]:
    """Tenants created in the past, a plan change, a top-up, a credit grant, and their usage since."""
    store = Store(settings.metadata_url)
    catalog = CatalogStore(settings.catalog_path, settings.catalog_dir).current
    ids, keys, histories = {}, {}, []
    for name, plan, days_ago, per_day in HISTORY:
        started = (now - timedelta(days=days_ago)).replace(hour=9, minute=0, second=0, microsecond=0)
        tenant, api_key, _ = store.create_tenant(name, plan, at=started)
        ids[name], keys[name] = tenant.tenant_id, api_key
        key_id = store.list_api_keys(tenant.tenant_id)[0].key_id
        histories.append(TenantHistory(tenant.tenant_id, key_id, started, per_day))
    # Tailspin moves from free to pro part-way through its first month: the invoice prorates the fee.
    store.assign_plan(ids["Tailspin Toys"], "pro", now - timedelta(days=25))
    store.add_topup(
        ids["Northwind Traders"],
        "tokens",
        10_000,
        Decimal("2.99"),
        granted_at=now - timedelta(days=30),
        source="pack:tokens_10k",
    )
    store.add_credit_grant(
        ids["Contoso Health"], Decimal("10.00"), granted_at=now - timedelta(days=35), reason="onboarding credit"
    )
    store.engine.dispose()
    events = backfill(
        catalog,
        settings.events_dir,
        histories,
        until=now - timedelta(minutes=5),
        writer_id=f"history-{int(now.timestamp())}",
    )
    return ids, keys, events


def _ask(url: str, api_key: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
        json={"model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]},
    )


def run_pipeline(env: dict[str, str]) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "chatmeter.cli", "pipeline", "run"], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"the pipeline failed:\n{result.stderr[-3000:]}")
    print(f"pipeline: every asset materialised in {time.monotonic() - started:.0f} s")


def _wait_for_snapshot(url: str, snapshot_id: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/healthz").json()["snapshot_id"] == snapshot_id:
            return
        time.sleep(0.1)
    raise SystemExit(f"the API did not pick up snapshot {snapshot_id}")


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
    settings = Settings(data_dir=data_dir, catalog_path=settings.catalog_path, _env_file=None)
    started = time.monotonic()
    now = datetime.now(UTC)
    print(f"chatmeter demo — data dir {data_dir}")
    try:
        server = ServeProcess(env).start()
    except RuntimeError as exc:
        raise SystemExit(f"the API did not start: {exc}") from None
    print(f"API up at {server.url}")
    summary = {"tenants": []}
    try:
        admin_http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {admin}"}, timeout=30)
        # Live traffic through the HTTP API: OpenAI SDK calls (streaming and not) and widget sessions.
        for index, (name, plan, calls, turns) in enumerate(TENANTS):
            t = admin_http.post("/admin/tenants", json={"name": name, "plan": plan}).json()
            ok, tokens = _chat_traffic(server.url, t["api_key"], calls, index)
            tokens += _widget_traffic(server.url, t["widget_key"], turns)
            summary["tenants"].append(
                {"name": name, "plan": plan, "tenant_id": t["tenant_id"], "api_key": t["api_key"]}
            )
        small = admin_http.post("/admin/tenants", json={"name": "Tiny Free Trial", "plan": "free"}).json()
        refusal = _drive_to_limit(server.url, small["api_key"])
        summary["tenants"].append(
            {"name": "Tiny Free Trial", "plan": "free", "tenant_id": small["tenant_id"], "api_key": small["api_key"]}
        )
        print("\nA free tenant driven to its limit live is refused:")
        print(
            f"  HTTP {refusal['status']}  Retry-After: {refusal['headers']['retry-after']}  "
            f"x-should-retry: {refusal['headers']['x-should-retry']}"
        )
        print("  " + json.dumps(refusal["body"]))

        # A month of history the API never saw live (another writer's log), then the pipeline.
        ids, keys, events = backfill_history(settings, now)
        print(f"\nbackfilled {events} events of history for {len(ids)} tenants (writer history-*)")
        before = _ask(server.url, keys["Litware"])
        print(f"Litware before the pipeline: HTTP {before.status_code} (the API has not seen its history)")
        run_pipeline(env)
        manifest = json.loads((data_dir / "snapshots" / "current.json").read_text())
        _wait_for_snapshot(server.url, manifest["snapshot_id"])
        after = _ask(server.url, keys["Litware"])
        print(
            f"Litware after snapshot {manifest['snapshot_id']}: HTTP {after.status_code} "
            f"{after.json()['error']['code'] if after.status_code != 200 else ''}"
        )
        if after.status_code != 429:
            raise SystemExit("the snapshot did not make the API refuse Litware")
        for name in ids:
            summary["tenants"].append(
                {
                    "name": name,
                    "plan": {h[0]: h[1] for h in HISTORY}[name],
                    "tenant_id": ids[name],
                    "api_key": keys[name],
                }
            )

        print(f"\n{'tenant':22} {'plan':22} {'tokens this month':>18} {'limit':>8} {'level':>9}")
        for t in summary["tenants"]:
            usage = httpx.get(f"{server.url}/v1/usage", headers={"Authorization": f"Bearer {t['api_key']}"}).json()
            limit = usage["monthlyLimit"] if usage["monthlyLimit"] is not None else "-"
            print(f"{t['name']:22} {t['plan']:22} {usage['monthlyUsage']:>18} {limit:>8} {usage['warningLevel']:>9}")
    finally:
        server.stop()
    _print_invoices(data_dir, {t["tenant_id"]: t["name"] for t in summary["tenants"]})
    print(f"\nusage events in the Parquet log: {_count_events(data_dir)}  ({data_dir / 'events'})")
    print(f"limit snapshot: {data_dir / 'snapshots' / 'current.json'}")
    print(f"warehouse:      {settings.warehouse_path}")
    print(f"invoices:       {data_dir / 'invoices'}")
    print(f"done in {time.monotonic() - started:.1f} s")
    return 0


def _print_invoices(data_dir: Path, names: dict[str, str]) -> None:
    docs = [json.loads(p.read_text()) for p in sorted((data_dir / "invoices").glob("*/*.json"))]
    if not docs:
        print("\nno invoices written")
        return
    print(f"\n{'invoice':34} {'tenant':22} {'period':25} {'status':9} {'total':>10}")
    for doc in docs:
        period = f"{doc['period_start'][:10]}..{doc['period_end'][:10]}"
        print(
            f"{doc['invoice_id'][:34]:34} {names.get(doc['tenant_id'], doc['tenant_id'])[:22]:22} {period:25} "
            f"{doc['status']:9} {doc['currency']} {doc['total']:>6}"
        )
    total = sum(Decimal(d["total"]) for d in docs if d["status"] != "draft")
    print(f"{len(docs)} invoices; finalized or paid total {total} (drafts are the months still running)")


def _count_events(data_dir: Path) -> int:
    import pyarrow.dataset as ds

    from chatmeter.schemas import EVENT_SCHEMA

    root = data_dir / "events"
    if not root.exists():
        return 0
    table = ds.dataset(root, format="parquet", partitioning="hive", schema=EVENT_SCHEMA).to_table(columns=["event_id"])
    return len(set(table.column("event_id").to_pylist()))
