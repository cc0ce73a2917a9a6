"""64 concurrent clients, spread over several end users of one tenant, against `chatmeter serve` in its own
process: no hard limit is passed by a single token, and the live counters, what the clients were told and
the Parquet log written at a clean stop all agree.

The run is bounded in count (64 clients x a fixed number of requests), never in time; demand is several
times every limit so that the limits are really contested.
"""

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import httpx
import pytest

from tests.e2e.conftest import Server
from tests.hardness.conftest import meter, sse_events

pytestmark = pytest.mark.e2e

CLIENTS = 64
REQUESTS_PER_CLIENT = 6


@dataclass(frozen=True)
class Scenario:
    plan: str
    users: int
    # (meter, window, scope) -> hard limit, as the shipped catalog has them
    limits: dict[tuple[str, str, str], int]
    # refusal codes (with scope) the load must run into, proof that the limits were contested
    expected_refusals: set[tuple[str, str]]


SCENARIOS = {
    "team": Scenario(
        "team",
        users=8,
        limits={
            ("tokens", "day", "tenant"): 50_000,
            ("tokens", "day", "end_user"): 10_000,
            ("requests", "day", "tenant"): 1_000,
        },
        expected_refusals={("tokens_day_limit", "tenant"), ("tokens_day_limit", "end_user")},
    ),
    "free": Scenario(
        "free",
        users=6,
        limits={("tokens", "month", "tenant"): 10_000},
        expected_refusals={("tokens_month_limit", "tenant")},
    ),
}


def user_of(client: int, users: int) -> str:
    """A skewed spread: u0 gets 6/16 of the clients, u1 4/16, the rest share what is left, so one user
    meets the per-user limit long before the tenant meets its own."""
    slot = client % 16
    index = 0 if slot < 6 else 1 if slot < 10 else 2 + (slot - 10) % (users - 2)
    return f"u{index}"


@dataclass
class Outcome:
    told: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # end user -> tokens told
    ok: Counter = field(default_factory=Counter)  # end user -> 200s
    refusals: Counter = field(default_factory=Counter)  # (code, scope) -> 429s
    problems: list[str] = field(default_factory=list)


async def one_call(http: httpx.AsyncClient, key: str, client: int, i: int, user: str, out: Outcome) -> None:
    body = {
        "model": "gpt-4o-mini",
        "user": user,
        "max_tokens": 1 + (client * 53 + i * 29) % 500,
        "messages": [{"role": "user", "content": "token " * (20 + (client * 37 + i * 11) % 300)}],
        "stream": (client + i) % 3 == 0,
    }
    async with http.stream("POST", "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as r:
        raw = await r.aread()
    if r.status_code == 429:
        error = r.json()["error"]
        if error["type"] != "usage_limit_exceeded" or r.headers.get("x-should-retry") != "false":
            out.problems.append(f"bad refusal: {r.headers} {error}")
        out.refusals[(error["code"], error["scope"])] += 1
        return
    if r.status_code != 200:
        out.problems.append(f"HTTP {r.status_code}: {raw[:300]!r}")
        return
    allowed = int(r.headers["x-chatmeter-max-tokens"])
    if body["stream"]:
        events = sse_events(raw)
        usage = [e["usage"] for e in events if isinstance(e, dict) and e.get("usage")]
        errors = [e for e in events if isinstance(e, dict) and "error" in e]
        if errors or len(usage) != 1 or events[-1] != "[DONE]":
            out.problems.append(f"bad stream: {raw[-300:]!r}")
            return
        usage = usage[0]
    else:
        usage = r.json()["usage"]
    if usage["completion_tokens"] > allowed or allowed > body["max_tokens"]:
        out.problems.append(f"output {usage['completion_tokens']} over the {allowed} admitted")
    out.told[user] += usage["total_tokens"]
    out.ok[user] += 1


async def hammer(url: str, key: str, scenario: Scenario) -> Outcome:
    out = Outcome()
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:

        async def client(c: int) -> None:
            user = user_of(c, scenario.users)
            for i in range(REQUESTS_PER_CLIENT):
                await one_call(http, key, c, i, user, out)

        await asyncio.gather(*(client(c) for c in range(CLIENTS)))
    return out


@pytest.mark.parametrize("plan", sorted(SCENARIOS))
def test_64_concurrent_clients_never_pass_a_limit_and_everything_reconciles(tmp_path, plan):
    scenario = SCENARIOS[plan]
    # A little model latency keeps many calls in flight at once, so holds really overlap.
    server = Server(tmp_path / "data", CHATMETER_SIMULATED_LATENCY_MS="10").start()
    try:
        tenant = server.create_tenant(plan, name=f"Load {plan}")
        out = asyncio.run(hammer(server.url, tenant["api_key"], scenario))
        assert not out.problems, out.problems[:5]
        users = sorted({user_of(c, scenario.users) for c in range(CLIENTS)})
        auth = {"Authorization": f"Bearer {tenant['api_key']}"}
        states = {u: httpx.get(f"{server.url}/v1/usage", params={"user": u}, headers=auth).json() for u in users}
        states[""] = httpx.get(f"{server.url}/v1/usage", headers=auth).json()
        assert httpx.get(f"{server.url}/healthz").json()["open_holds"] == 0
    finally:
        server.stop()  # a clean stop rolls the log into Parquet

    total_ok = sum(out.ok.values())
    assert total_ok > 0
    assert scenario.expected_refusals <= set(out.refusals), out.refusals
    for (meter_name, window, scope), hard in scenario.limits.items():
        for user in users if scope == "end_user" else [""]:
            told = out.told if meter_name == "tokens" else out.ok
            expected = told[user] if user else sum(told.values())
            entry = meter(states[user], meter_name, window, scope)
            assert entry["used"] <= hard, f"{meter_name}/{window}/{scope} {user}: {entry['used']} > {hard}"
            assert entry["limit"] == hard and entry["reserved"] == 0
            assert entry["used"] == expected, f"{meter_name}/{window}/{scope} {user}"
    for user in users:  # a user's own counter shows only where the plan limits end users (the snapshot counts
        # them only there), and then it is what that user was told
        shown = {(d["meter"], d["window"]) for d in states[user]["meters"] if d["scope"] == "end_user"}
        assert shown == {(m, w) for m, w, scope in scenario.limits if scope == "end_user"}
        for meter_name, window in shown:
            assert meter(states[user], meter_name, window, "end_user")["used"] == out.told[user]

    events = {e["event_id"]: e for e in server.events().to_pylist() if e["tenant_id"] == tenant["tenant_id"]}
    by_status = Counter(e["status"] for e in events.values())
    assert by_status == Counter({"ok": total_ok, "rejected": sum(out.refusals.values())})
    logged = defaultdict(int)
    for e in events.values():
        assert e["status"] == "ok" or e["input_tokens"] + e["output_tokens"] == 0
        logged[e["end_user_id"]] += e["input_tokens"] + e["output_tokens"]
    assert {u: n for u, n in logged.items() if n} == {u: n for u, n in out.told.items() if n}
