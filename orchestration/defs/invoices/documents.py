"""Invoice documents: JSON with money as decimal strings, and an HTML rendering beside it."""

import hashlib
import html
import json
import os
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from orchestration.defs.snapshots.publish import write_atomic, write_atomic_many


def money(value: Decimal | None) -> str | None:
    return None if value is None else f"{Decimal(value):.2f}"


def _plain(value: Decimal | None) -> str | None:
    """A decimal without trailing zeros past the point (quantities and unit prices)."""
    if value is None:
        return None
    text = format(Decimal(value).normalize(), "f")
    return text


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def invoice_document(invoice: dict, lines: list[dict]) -> dict:
    return {
        "invoice_id": invoice["invoice_id"],
        "tenant_id": invoice["tenant_id"],
        "plan": invoice["plan"],
        "period": invoice["period"],
        "period_start": _iso(invoice["period_start"]),
        "period_end": _iso(invoice["period_end"]),
        "currency": invoice["currency"],
        "status": invoice["status"],
        "lines": [
            {
                "line_number": line["line_number"],
                "kind": line["kind"],
                "meter": line["meter"],
                "description": line["description"],
                "quantity": _plain(line["quantity"]),
                "unit_price": _plain(line["unit_price"]),
                "amount": money(line["amount"]),
            }
            for line in sorted(lines, key=lambda x: x["line_number"])
        ],
        "subtotal": money(invoice["subtotal"]),
        "credits_applied": money(invoice["credits_applied"]),
        "total": money(invoice["total"]),
    }


def render_html(doc: dict, tenant_name: str | None = None) -> str:
    e = html.escape
    rows = "\n".join(
        f"<tr><td>{e(line['kind'])}</td><td>{e(line['description'] or '')}</td>"
        f"<td class=n>{e(line['quantity'] or '')}</td><td class=n>{e(line['unit_price'] or '')}</td>"
        f"<td class=n>{e(line['amount'])}</td></tr>"
        for line in doc["lines"]
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Invoice {e(doc["invoice_id"])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto}}table{{width:100%;
border-collapse:collapse}}td,th{{border-bottom:1px solid #ddd;padding:.4rem;text-align:left}}.n{{text-align:right}}
</style></head><body>
<h1>Invoice {e(doc["invoice_id"])}</h1>
<p>{e(tenant_name or doc["tenant_id"])} &middot; plan {e(doc["plan"] or "")} &middot; status {e(doc["status"])}</p>
<p>Billing period {e(doc["period_start"])} to {e(doc["period_end"])} ({e(doc["currency"])})</p>
<table><thead><tr><th>Kind</th><th>Description</th><th class=n>Quantity</th><th class=n>Unit price</th>
<th class=n>Amount</th></tr></thead><tbody>
{rows}
</tbody></table>
<p class=n>Subtotal {e(doc["subtotal"])}<br>Credits applied {e(doc["credits_applied"])}<br>
<strong>Total {e(doc["total"])} {e(doc["currency"])}</strong></p>
</body></html>
"""


def invoice_files(invoices_dir: Path, doc: dict, tenant_name: str | None = None) -> list[tuple[Path, bytes]]:
    """The invoice's JSON document and its HTML rendering, as (path, bytes)."""
    folder = invoices_dir / doc["period"]
    return [
        (folder / f"{doc['tenant_id']}.json", (json.dumps(doc, indent=2) + "\n").encode()),
        (folder / f"{doc['tenant_id']}.html", render_html(doc, tenant_name).encode()),
    ]


def _holds(path: Path, data: bytes) -> bool:
    try:
        return path.read_bytes() == data
    except FileNotFoundError:
        return False


def write_if_changed(files: list[tuple[Path, bytes]]) -> dict[Path, os.stat_result]:
    """Atomically write the files that do not already hold exactly these bytes (most past months' do not change;
    an fsync'd rewrite of each costs seconds over thousands of tenants). Returns every file's stat."""
    for folder in {path.parent for path, _ in files}:
        folder.mkdir(parents=True, exist_ok=True)
    changed, stats = [], {}
    for path, data in files:
        if _holds(path, data):
            stats[path] = path.stat()
        else:
            changed.append((path, data))
    stats.update(zip((path for path, _ in changed), write_atomic_many(changed), strict=True))
    return stats


def _state(st: os.stat_result) -> list[int]:
    """What tells a file we wrote from one changed since: an atomic write makes a new inode, an edit in place
    moves the mtime or the size."""
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def file_state(path: str) -> list[int] | None:
    try:
        return _state(os.stat(path))
    except FileNotFoundError:
        return None


# Part of every record: a change to how documents are rendered (this file) re-renders them all once.
RENDERER = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


class RenderedInvoices:
    """What each invoice's files were last rendered from (the digest of its warehouse rows and the tenant's name)
    and what the files were then (file_state). An invoice whose rows, name and files are all as recorded is
    left alone without being rendered or read; any other is rendered, compared with what is on disk, and
    written if it differs."""

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[str, list] = {}
        self.changed = False
        try:
            saved = json.loads(path.read_bytes())
        except (FileNotFoundError, ValueError):
            return  # none yet, or unreadable: every invoice is rendered and compared once
        if saved.get("renderer") == RENDERER:
            self.records = saved["invoices"]

    def current(self, invoices_dir: Path, invoice_id: str, tenant_id: str, period: str, key: list) -> bool:
        record = self.records.get(invoice_id)
        if record is None or record[0] != key:
            return False
        stem = f"{invoices_dir}/{period}/{tenant_id}"  # str, not Path: this runs for every invoice on every run
        return record[1] == file_state(f"{stem}.json") and record[2] == file_state(f"{stem}.html")

    def record(self, invoice_id: str, key: list, json_stat: os.stat_result, html_stat: os.stat_result) -> None:
        self.records[invoice_id] = [key, _state(json_stat), _state(html_stat)]
        self.changed = True

    def keep_only(self, invoice_ids: set[str]) -> None:
        """Forget invoices the warehouse no longer holds."""
        gone = self.records.keys() - invoice_ids
        for invoice_id in gone:
            del self.records[invoice_id]
        self.changed = self.changed or bool(gone)

    def save(self) -> None:
        if self.changed:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps({"renderer": RENDERER, "invoices": self.records}).encode())
            self.changed = False
