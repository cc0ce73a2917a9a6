"""A local test double of Stripe's HTTP API: form-encoded requests, JSON answers, Idempotency-Key honoured.

Covers what the invoice sync calls: POST /v1/customers, /v1/invoiceitems, /v1/invoices,
/v1/invoices/{id}/finalize, and GET of each object.
"""

import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl


def unflatten(pairs: list[tuple[str, str]]) -> dict:
    """`metadata[tenant_id]=x` -> {"metadata": {"tenant_id": "x"}} (one level, as the sync sends)."""
    out: dict = {}
    for key, value in pairs:
        if "[" in key:
            outer, inner = key.split("[", 1)
            out.setdefault(outer, {})[inner.rstrip("]")] = value
        else:
            out[key] = value
    return out


class StripeDouble:
    def __init__(self, api_key: str = "sk_test_double"):
        self.api_key = api_key
        self.objects: dict[str, dict[str, dict]] = {"customer": {}, "invoiceitem": {}, "invoice": {}}
        self.idempotent: dict[str, tuple[int, bytes]] = {}
        self.requests: list[tuple[str, str, str | None]] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "StripeDouble":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _create(self, kind: str, prefix: str, params: dict) -> dict:
        obj = {"id": f"{prefix}_{secrets.token_hex(6)}", "object": kind, "livemode": False, **params}
        if kind == "invoiceitem":
            obj["amount"] = int(params["amount"])
            invoice = self.objects["invoice"].get(params.get("invoice", ""))
            if invoice is not None:
                invoice["lines"]["data"].append(obj)
                invoice["total"] += obj["amount"]
                invoice["amount_due"] = max(invoice["total"], 0)
        if kind == "invoice":
            obj.update(status="draft", total=0, amount_due=0, lines={"object": "list", "data": []})
        self.objects[kind][obj["id"]] = obj
        return obj

    def handle(self, method: str, path: str, params: dict, auth: str | None, key: str | None) -> tuple[int, dict]:
        if auth != f"Bearer {self.api_key}":
            return 401, {"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}
        parts = path.strip("/").split("/")
        if method == "POST" and parts == ["v1", "customers"]:
            return 200, self._create("customer", "cus", params)
        if method == "POST" and parts == ["v1", "invoiceitems"]:
            return 200, self._create("invoiceitem", "ii", params)
        if method == "POST" and parts == ["v1", "invoices"]:
            return 200, self._create("invoice", "in", params)
        if method == "POST" and len(parts) == 4 and parts[:2] == ["v1", "invoices"] and parts[3] == "finalize":
            invoice = self.objects["invoice"].get(parts[2])
            if invoice is None:
                return 404, {"error": {"type": "invalid_request_error", "message": "No such invoice"}}
            if invoice["status"] != "draft":
                return 400, {"error": {"type": "invalid_request_error", "message": "Invoice is already finalized"}}
            invoice["status"] = "open"
            return 200, invoice
        if method == "GET" and len(parts) == 3:
            kind = {"customers": "customer", "invoices": "invoice", "invoiceitems": "invoiceitem"}.get(parts[1])
            obj = self.objects.get(kind or "", {}).get(parts[2])
            if obj is not None:
                return 200, obj
        return 404, {"error": {"type": "invalid_request_error", "message": f"Unrecognized request URL {path}"}}

    def _handler(self):
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self, method: str):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                params = unflatten(parse_qsl(body, keep_blank_values=True))
                key = self.headers.get("idempotency-key")
                with double.lock:
                    double.requests.append((method, self.path, key))
                    if key and method == "POST" and key in double.idempotent:
                        status, payload = double.idempotent[key]
                        replay = True
                    else:
                        status, obj = double.handle(method, self.path, params, self.headers.get("authorization"), key)
                        payload = json.dumps(obj).encode()
                        replay = False
                        if key and method == "POST" and status < 500:
                            double.idempotent[key] = (status, payload)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("request-id", f"req_{secrets.token_hex(6)}")
                if replay:
                    self.send_header("idempotent-replayed", "true")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self):
                self._serve("POST")

            def do_GET(self):
                self._serve("GET")

        return Handler
