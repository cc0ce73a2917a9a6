"""Tools the widget's assistant may call server-side (the seeds' demo workflows), deterministic."""

import hashlib
import json
from collections.abc import Callable

TOOLS: list[dict] = [
    {
        "type": "function",
        "function": {
            "name": "get_order_status",
            "description": "Look up an order by its number",
            "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "check_inventory",
            "description": "Check stock of a product",
            "parameters": {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]},
        },
    },
    {
        "type": "function",
        "function": {
            "name": "book_appointment",
            "description": "Book an appointment on a date",
            "parameters": {"type": "object", "properties": {"date": {"type": "string"}}, "required": ["date"]},
        },
    },
]


def _pick(seed: str, options: list[str]) -> str:
    return options[int(hashlib.sha256(seed.encode()).hexdigest(), 16) % len(options)]


def _order(args: dict) -> dict:
    order = str(args.get("order_id", ""))
    return {"order_id": order, "status": _pick(order, ["processing", "shipped", "delivered"])}


def _inventory(args: dict) -> dict:
    sku = str(args.get("sku", ""))
    return {"sku": sku, "in_stock": int(hashlib.sha256(sku.encode()).hexdigest()[:4], 16) % 50}


def _appointment(args: dict) -> dict:
    day = str(args.get("date", ""))
    return {"date": day, "confirmed": True, "slot": _pick(day, ["09:00", "11:30", "14:00", "16:30"])}


HANDLERS: dict[str, Callable[[dict], dict]] = {
    "get_order_status": _order,
    "check_inventory": _inventory,
    "book_appointment": _appointment,
}


def run_tool(name: str, arguments: str) -> str:
    """Run one tool call; a bad call answers with an error the model can read, never an exception."""
    handler = HANDLERS.get(name)
    if handler is None:
        return json.dumps({"error": f"unknown tool {name}"})
    try:
        args = json.loads(arguments or "{}")
    except json.JSONDecodeError:
        return json.dumps({"error": "arguments are not JSON"})
    return json.dumps(handler(args if isinstance(args, dict) else {}))
