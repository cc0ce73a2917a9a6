"""Limit alerts: signing, delivery with retries, the record (which thresholds a window has crossed is SQL, in
assets.py).

Webhook requests carry `X-Chatmeter-Timestamp` (Unix seconds) and `X-Chatmeter-Signature: v1=<hex>`, the
HMAC-SHA256 of `<timestamp>.<body>` under the tenant's webhook secret; receivers should refuse timestamps
older than a few minutes.
"""

import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import httpx

# Percent of a limit at which a window is alerted, once each.
THRESHOLDS = (75, 90, 100)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"v1={mac}"


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, tolerance_s: int = 300, now: float | None = None
) -> bool:
    if abs((now or time.time()) - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), signature)


def deliver(
    url: str,
    secret: str,
    payload: dict,
    attempts: int = 4,
    backoff_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    timeout_s: float = 5.0,
) -> tuple[bool, int, str]:
    """POST with exponential backoff (backoff_s, 2x, 4x...); a 2xx is delivered. (ok, attempts, last error)."""
    body = json.dumps(payload, sort_keys=True).encode()
    error = ""
    for attempt in range(1, attempts + 1):
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "x-chatmeter-timestamp": str(timestamp),
            "x-chatmeter-signature": sign(secret, timestamp, body),
            "x-chatmeter-alert-id": payload["alert_id"],
        }
        try:
            response = httpx.post(url, content=body, headers=headers, timeout=timeout_s)
            if 200 <= response.status_code < 300:
                return True, attempt, ""
            error = f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        if attempt < attempts:
            sleep(backoff_s * 2 ** (attempt - 1))
    return False, attempts, error


class AlertLog:
    """Append-only JSON lines under the data dir: every delivery attempt's outcome."""

    def __init__(self, path: Path):
        self.path = path

    def delivered(self) -> set[str]:
        if not self.path.exists():
            return set()
        out = set()
        for line in self.path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                if record.get("status") == "delivered":
                    out.add(record["alert_id"])
        return out

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
