"""Invoice documents: JSON with money as decimal strings, and an HTML rendering beside it."""

import html
import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from orchestration.defs.snapshots.publish import write_atomic


def _money(value: Decimal | None) -> str | None:
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
                "amount": _money(line["amount"]),
            }
            for line in sorted(lines, key=lambda x: x["line_number"])
        ],
        "subtotal": _money(invoice["subtotal"]),
        "credits_applied": _money(invoice["credits_applied"]),
        "total": _money(invoice["total"]),
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


def write_if_changed(path: Path, data: bytes) -> None:
    """Atomically, unless the file already holds exactly this: every run renders every invoice, and most
    (past months) do not change; an fsync'd rewrite of each costs seconds over thousands of tenants."""
    try:
        if path.read_bytes() == data:
            return
    except FileNotFoundError:
        pass
    write_atomic(path, data)


def write_invoice(invoices_dir: Path, doc: dict, tenant_name: str | None = None) -> Path:
    folder = invoices_dir / doc["period"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{doc['tenant_id']}.json"
    write_if_changed(path, (json.dumps(doc, indent=2) + "\n").encode())
    write_if_changed(folder / f"{doc['tenant_id']}.html", render_html(doc, tenant_name).encode())
    return path
