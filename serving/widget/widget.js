/* chatmeter widget: <script src="https://api.example/widget.js" data-widget-key="cm_pub_..."></script>
 * Options (data attributes): data-widget-key (required), data-api-base (default: this script's origin),
 * data-position (bottom-right | bottom-left | top-right | top-left), data-primary-color, data-greeting,
 * data-context, data-title. Shadow DOM keeps the host page's CSS out; the session survives reloads. */
(function () {
  "use strict";
  var script = document.currentScript || document.querySelector("script[data-widget-key]");
  if (!script || window.__chatmeterWidget) return;
  window.__chatmeterWidget = true;
  var cfg = {
    key: script.getAttribute("data-widget-key"),
    base: script.getAttribute("data-api-base") || new URL(script.src, location.href).origin,
    position: script.getAttribute("data-position") || "bottom-right",
    color: script.getAttribute("data-primary-color") || "#2563eb",
    greeting: script.getAttribute("data-greeting") || "Hi! How can I help?",
    context: script.getAttribute("data-context") || "support",
    title: script.getAttribute("data-title") || "Chat with us"
  };
  var store = window.localStorage;
  var sessionKey = "chatmeter:" + cfg.key + ":session";
  var userKey = "chatmeter:" + cfg.key + ":user";
  var userId = store.getItem(userKey);
  if (!userId) {
    userId = "anon-" + Math.random().toString(36).slice(2) + Date.now().toString(36);
    store.setItem(userKey, userId);
  }
  var sessionId = store.getItem(sessionKey);

  var host = document.createElement("div");
  host.id = "chatmeter-widget";
  document.body.appendChild(host);
  var root = host.attachShadow({ mode: "open" });
  var vertical = cfg.position.indexOf("top") === 0 ? "top" : "bottom";
  var horizontal = cfg.position.indexOf("left") > 0 ? "left" : "right";
  root.innerHTML =
    "<style>" +
    ":host{all:initial}*{box-sizing:border-box;font-family:system-ui,sans-serif}" +
    ".bubble{position:fixed;" + vertical + ":20px;" + horizontal + ":20px;width:56px;height:56px;border-radius:50%;" +
    "background:var(--c);color:#fff;border:0;display:flex;align-items:center;justify-content:center;cursor:pointer;box-shadow:0 4px 12px rgba(0,0,0,.25);z-index:2147483646}" +
    ".panel{position:fixed;" + vertical + ":88px;" + horizontal + ":20px;width:360px;max-width:calc(100vw - 40px);height:520px;" +
    "max-height:calc(100vh - 120px);background:#fff;border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.3);display:none;" +
    "flex-direction:column;overflow:hidden;z-index:2147483647}" +
    ".panel.open{display:flex}.head{background:var(--c);color:#fff;padding:12px 14px;font-weight:600;display:flex;justify-content:space-between}" +
    ".meter{padding:6px 14px;font-size:12px;color:#374151;border-bottom:1px solid #e5e7eb}" +
    ".bar{height:6px;background:#e5e7eb;border-radius:3px;margin-top:4px;overflow:hidden}.fill{height:100%;width:0;background:#16a34a}" +
    ".fill.warning{background:#ca8a04}.fill.critical{background:#dc2626}" +
    ".msgs{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px}" +
    ".m{padding:8px 12px;border-radius:12px;max-width:85%;white-space:pre-wrap;font-size:14px;line-height:1.4}" +
    ".user{align-self:flex-end;background:var(--c);color:#fff}.assistant{align-self:flex-start;background:#f3f4f6;color:#111}" +
    ".error{align-self:center;background:#fef2f2;color:#991b1b;font-size:13px}.typing{color:#6b7280;font-size:12px;padding:0 12px 6px;display:none}" +
    "form{display:flex;border-top:1px solid #e5e7eb}input{flex:1;border:0;padding:12px;font-size:14px;outline:none}" +
    "button.send{border:0;background:var(--c);color:#fff;padding:0 16px;cursor:pointer}button:disabled,input:disabled{opacity:.5;cursor:not-allowed}" +
    "@media (max-width:480px){.panel{" + horizontal + ":0;" + vertical + ":0;width:100vw;max-width:100vw;height:100vh;max-height:100vh;border-radius:0}}" +
    "</style>" +
    "<button class='bubble' part='bubble' aria-label='Open chat'><svg width='26' height='26' viewBox='0 0 24 24' " +
    "fill='none' stroke='currentColor' stroke-width='2' stroke-linecap='round' stroke-linejoin='round'>" +
    "<path d='M21 15a2 2 0 0 1-2 2H7l-4 4V5a2 2 0 0 1 2-2h14a2 2 0 0 1 2 2z'/></svg></button>" +
    "<div class='panel' role='dialog' aria-label='Chat'>" +
    "<div class='head'><span class='title'></span><span class='close' style='cursor:pointer' aria-label='Close'>&times;</span></div>" +
    "<div class='meter'><span class='meter-text'>usage</span><div class='bar'><div class='fill'></div></div></div>" +
    "<div class='msgs' aria-live='polite'></div><div class='typing'>Assistant is typing&hellip;</div>" +
    "<form><input name='q' autocomplete='off' placeholder='Type a message' maxlength='8000'><button class='send' type='submit'>Send</button></form>" +
    "</div>";
  host.style.setProperty("--c", cfg.color);
  root.host.style.setProperty("--c", cfg.color);
  var $ = function (sel) { return root.querySelector(sel); };
  $(".title").textContent = cfg.title;
  var msgs = $(".msgs"), input = $("input"), send = $("button.send"), typing = $(".typing");

  function add(role, text) {
    var div = document.createElement("div");
    div.className = "m " + role;
    div.textContent = text;
    msgs.appendChild(div);
    msgs.scrollTop = msgs.scrollHeight;
    return div;
  }
  function showMeter(meter) {
    if (!meter) return;
    var pct = meter.percentUsed == null ? 0 : Math.min(100, meter.percentUsed);
    var fill = $(".fill");
    fill.style.width = pct + "%";
    fill.className = "fill " + (meter.warningLevel || "ok");
    var used = meter.monthlyUsage, limit = meter.monthlyLimit;
    $(".meter-text").textContent = limit == null ? used + " tokens this month"
      : used + " / " + limit + " tokens (" + pct + "%)";
    if (meter.remaining === 0) setBlocked("Monthly limit reached. It resets " + (meter.resetDate || "").slice(0, 10) + ".");
  }
  function setBlocked(reason) {
    input.disabled = true; send.disabled = true;
    input.placeholder = reason;
  }
  function headers() {
    return { "Content-Type": "application/json", "X-Widget-Key": cfg.key };
  }
  function fail(body, status) {
    var err = (body && body.error) || {};
    if (status === 429 || err.type === "usage_limit_exceeded") {
      add("error", "Usage limit reached; it resets " + (err.resets_at || "soon").slice(0, 10) + ".");
      setBlocked("Usage limit reached");
    } else if (status === 402) {
      add("error", "This service is paused until a payment is made.");
      setBlocked("Unavailable");
    } else {
      add("error", err.message || "Something went wrong. Please retry.");
    }
  }

  function loadHistory() {
    if (!sessionId) { add("assistant", cfg.greeting); return; }
    fetch(cfg.base + "/chat/history/" + encodeURIComponent(sessionId), { headers: headers() })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data || !data.messages.length) { sessionId = null; store.removeItem(sessionKey); add("assistant", cfg.greeting); return; }
        data.messages.forEach(function (m) { if (m.role === "user" || m.role === "assistant") add(m.role, m.content); });
      })
      .catch(function () { add("assistant", cfg.greeting); });
  }

  function parseEvents(buffer, onEvent) {
    var parts = buffer.split("\n\n");
    for (var i = 0; i < parts.length - 1; i++) {
      var name = "message", data = "";
      parts[i].split("\n").forEach(function (line) {
        if (line.indexOf("event: ") === 0) name = line.slice(7);
        else if (line.indexOf("data: ") === 0) data += line.slice(6);
      });
      if (data) onEvent(name, JSON.parse(data));
    }
    return parts[parts.length - 1];
  }

  function ask(text) {
    add("user", text);
    typing.style.display = "block";
    send.disabled = true;
    var payload = { message: text, user_id: userId, context: cfg.context, stream: true };
    if (sessionId) payload.session_id = sessionId;
    var bubble = null;
    fetch(cfg.base + "/chat/message", { method: "POST", headers: headers(), body: JSON.stringify(payload) })
      .then(function (r) {
        if (!r.ok) return r.json().then(function (b) { fail(b, r.status); });
        var reader = r.body.getReader(), decoder = new TextDecoder(), buffer = "";
        function pump() {
          return reader.read().then(function (chunk) {
            if (chunk.done) return;
            buffer = parseEvents(buffer + decoder.decode(chunk.value, { stream: true }), function (name, data) {
              if (name === "delta") {
                typing.style.display = "none";
                if (!bubble) bubble = add("assistant", "");
                bubble.textContent += data.content;
                msgs.scrollTop = msgs.scrollHeight;
              } else if (name === "done") {
                sessionId = data.session_id;
                store.setItem(sessionKey, sessionId);
                showMeter(data.meter);
              } else if (name === "error") {
                fail(data, data.error && data.error.type === "usage_limit_exceeded" ? 429 : 0);
              }
            });
            return pump();
          });
        }
        return pump();
      })
      .catch(function () { add("error", "Connection problem. Please retry."); })
      .then(function () { typing.style.display = "none"; if (!input.disabled) send.disabled = false; input.focus(); });
  }

  $(".bubble").addEventListener("click", function () {
    var panel = $(".panel");
    var opening = !panel.classList.contains("open");
    panel.classList.toggle("open");
    if (opening && !msgs.childElementCount) loadHistory();
    if (opening) input.focus();
  });
  $(".close").addEventListener("click", function () { $(".panel").classList.remove("open"); });
  $("form").addEventListener("submit", function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text || input.disabled) return;
    input.value = "";
    ask(text);
  });
  window.ChatmeterWidget = {
    open: function () { if (!$(".panel").classList.contains("open")) $(".bubble").click(); },
    ask: ask,
    endSession: function () {
      if (!sessionId) return Promise.resolve();
      return fetch(cfg.base + "/chat/end", { method: "POST", headers: headers(), body: JSON.stringify({ session_id: sessionId }) })
        .then(function () { store.removeItem(sessionKey); sessionId = null; });
    }
  };
})();
