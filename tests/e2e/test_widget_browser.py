"""The widget in a real browser: Debian's Chromium, driven by Playwright, on a host page of another origin."""

import functools
import http.server
import shutil
import threading
from pathlib import Path

import httpx
import pytest

from chatmeter.serve_process import free_port
from tests.e2e.conftest import ADMIN

pytestmark = pytest.mark.e2e
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


@pytest.fixture
def host_page(tmp_path: Path):
    """A shop's page on its own origin, served from a temp dir."""
    port = free_port()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{port}"
    httpd.shutdown()


def test_widget_chats_streams_meters_and_restores_history(server, host_page, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (CI installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    root, origin = host_page
    tenant = server.create_tenant("pro", "Shop")
    r = httpx.post(
        f"{server.url}/admin/tenants/{tenant['tenant_id']}/widget-keys",
        json={"allowed_origins": [origin]},
        headers={"Authorization": f"Bearer {ADMIN}"},
    )
    widget_key = r.json()["widget_key"]
    (root / "index.html").write_text(
        "<!doctype html><html><head><title>Shop</title><style>div{color:red}</style></head><body>"
        "<h1>Welcome to the shop</h1>"
        f"<script src='{server.url}/widget.js' data-widget-key='{widget_key}' data-title='Shop help'"
        " data-greeting='Hello from the shop!'></script></body></html>"
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{origin}/index.html")
        page.click("#chatmeter-widget >> .bubble")
        page.wait_for_selector("#chatmeter-widget >> .m.assistant")
        assert page.inner_text("#chatmeter-widget >> .m.assistant") == "Hello from the shop!"
        page.fill("#chatmeter-widget >> input", "Where is my order 1042?")
        page.press("#chatmeter-widget >> input", "Enter")
        page.wait_for_function(
            "() => document.querySelector('#chatmeter-widget').shadowRoot.querySelectorAll('.m.assistant').length >= 2"
            " && document.querySelector('#chatmeter-widget').shadowRoot.querySelector('.meter-text').textContent"
            ".includes('/ 50000')"
        )
        meter = page.inner_text("#chatmeter-widget >> .meter-text")
        answer = page.locator("#chatmeter-widget >> .m.assistant").nth(1).inner_text()
        assert answer.strip()
        page.screenshot(path=str(tmp_path / "widget.png"))
        used = httpx.get(f"{server.url}/v1/usage", headers={"Authorization": f"Bearer {tenant['api_key']}"}).json()
        assert meter.startswith(f"{used['monthlyUsage']} / 50000")
        # A reload restores the conversation from the server.
        page.reload()
        page.click("#chatmeter-widget >> .bubble")
        page.wait_for_function(
            "() => document.querySelector('#chatmeter-widget').shadowRoot.querySelectorAll('.m').length >= 2"
        )
        texts = page.locator("#chatmeter-widget >> .m").all_inner_texts()
        assert texts[0] == "Where is my order 1042?" and texts[1].strip() == answer.strip()
        browser.close()
    assert not errors
