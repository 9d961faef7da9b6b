"""The WebAdmin page: static HTML, CSS and JS served as three resources.

The page holds no data: its script fetches ``api/status`` every second and renders it with
DOM calls (``textContent`` only, so nothing a client sends, e.g. a client id, is ever parsed
as HTML). Separate resources let the server send a strict Content-Security-Policy.
"""

from __future__ import annotations

INDEX_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>TMR WebAdmin</title>
<link rel="stylesheet" href="app.css">
</head>
<body>
<header>
  <div class="brand">TMR <span>WebAdmin</span></div>
  <div id="server" class="server">connecting&hellip;</div>
  <div id="role" class="badge">&ndash;</div>
</header>
<main>
  <div id="banners"></div>
  <section class="cards">
    <div class="card"><h3>Active server</h3><div id="active" class="big">&ndash;</div>
      <div id="active-note" class="note"></div></div>
    <div class="card"><h3>Epoch</h3><div id="epoch" class="big">&ndash;</div>
      <div id="epoch-note" class="note"></div></div>
    <div class="card"><h3>Virtual IP</h3><div id="vip" class="big">&ndash;</div>
      <div id="vip-note" class="note"></div></div>
    <div class="card"><h3>Backends up</h3><div id="backends-up" class="big">&ndash;</div>
      <div id="margin-note" class="note"></div></div>
  </section>
  <section>
    <h2>Virtual container <span id="serial" class="serial"></span></h2>
    <div id="no-license" class="empty" hidden>
      <strong>No license in this container yet.</strong>
      Install a TMR license set on the three backends (see the operator guide,
      <code>license_rollout.yml</code>); it shows here as soon as two backends hold it.
    </div>
    <table id="licenses">
      <thead><tr><th>Firm:Product</th><th>TMR ID</th><th>LQ</th><th>In use</th><th>Expiry</th>
        <th>Backends</th><th>State</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section>
    <h2>Backends</h2>
    <table id="backends">
      <thead><tr><th>#</th><th>Name</th><th>Reachable</th><th>In sync</th>
        <th>Promised epoch</th><th>Licenses</th></tr></thead>
      <tbody></tbody>
    </table>
  </section>
  <section>
    <h2>Handles <span id="handle-count" class="serial"></span></h2>
    <table id="handles">
      <thead><tr><th>Client id</th><th>User</th><th>Host</th><th>PID</th><th>License</th>
        <th>Seats</th><th>Since</th><th>Last heartbeat</th><th>Lease left</th><th></th></tr>
      </thead>
      <tbody></tbody>
    </table>
    <div id="no-handles" class="note" hidden></div>
    <div id="release-result" class="note" hidden></div>
  </section>
  <section>
    <h2>Queue <span id="queue-count" class="serial"></span></h2>
    <table id="queue">
      <thead><tr><th>License</th><th>Position</th><th>Seats</th><th>User</th><th>Host</th>
        <th>PID</th><th>Client id</th><th>Since</th><th>Hold left</th></tr></thead>
      <tbody></tbody>
    </table>
    <div id="no-queue" class="note" hidden></div>
  </section>
  <section>
    <h2>Denials <span id="denial-count" class="serial"></span></h2>
    <table id="denials">
      <thead><tr><th>When</th><th>License</th><th>Seats</th><th>User</th><th>Host</th>
        <th>PID</th><th>Code</th><th>Key</th><th>Why</th></tr></thead>
      <tbody></tbody>
    </table>
    <div id="no-denials" class="note" hidden></div>
  </section>
</main>
<footer><span id="updated">&ndash;</span> &middot; <span id="mode">read-only view</span> &middot;
  <a href="api/status">api/status</a> &middot; <a href="metrics">metrics</a></footer>
<script src="app.js"></script>
</body>
</html>
"""

APP_CSS = """
:root { --ok:#1a7f37; --warn:#9a6700; --err:#cf222e; --mute:#57606a; --line:#d0d7de;
  --bg:#f6f8fa; --card:#fff; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:#1f2328; font-size:14px; }
header { display:flex; align-items:center; gap:16px; padding:12px 24px; background:#24292f;
  color:#fff; }
.brand { font-weight:700; font-size:18px; letter-spacing:.5px; }
.brand span { font-weight:400; opacity:.8; }
.server { flex:1; opacity:.9; }
.badge { padding:3px 10px; border-radius:12px; font-weight:600; text-transform:uppercase;
  font-size:12px; background:#57606a; }
.badge.active { background:var(--ok); } .badge.standby { background:#0969da; }
.badge.takeover { background:var(--warn); } .badge.fenced { background:var(--err); }
main { padding:16px 24px; max-width:1200px; }
.cards { display:grid; grid-template-columns:repeat(auto-fit, minmax(200px, 1fr)); gap:12px; }
.card { background:var(--card); border:1px solid var(--line); border-radius:8px;
  padding:12px 16px; }
.card h3 { margin:0 0 6px; font-size:12px; color:var(--mute); text-transform:uppercase; }
.big { font-size:20px; font-weight:600; }
.note { color:var(--mute); font-size:12px; margin-top:4px; }
h2 { font-size:16px; margin:24px 0 8px; }
.serial { font-weight:400; color:var(--mute); font-family:ui-monospace, monospace; }
table { width:100%; border-collapse:collapse; background:var(--card);
  border:1px solid var(--line); border-radius:8px; overflow:hidden; }
th, td { text-align:left; padding:8px 10px; border-bottom:1px solid var(--line); }
th { background:#eaeef2; font-size:12px; color:var(--mute); font-weight:600;
  white-space:nowrap; }
td.nowrap, td.backend-status, td.mono { white-space:nowrap; }
tr:last-child td { border-bottom:none; }
td.num { font-variant-numeric: tabular-nums; }
.mono { font-family:ui-monospace, monospace; }
.chip { display:inline-block; min-width:52px; margin-right:4px; padding:2px 6px;
  border-radius:4px; font-family:ui-monospace, monospace; font-size:12px; text-align:center;
  border:1px solid var(--line); background:#fff; }
.chip.held { background:#dafbe1; border-color:#aceebb; }
.chip.above { background:#fff8c5; border-color:#eed888; }
.chip.missing { background:#ffebe9; border-color:#ffcecb; color:var(--err); }
.chip.refused { background:#ffebe9; border-color:var(--err); color:var(--err); font-weight:600; }
.state { font-weight:600; } .state.ok { color:var(--ok); } .state.warning { color:var(--warn); }
.expiry.warning { color:var(--warn); font-weight:600; }
.expiry.expired { color:var(--err); font-weight:600; }
.state.error { color:var(--err); }
.bar { position:relative; width:120px; height:8px; background:#eaeef2; border-radius:4px;
  display:inline-block; vertical-align:middle; margin-left:8px; overflow:hidden; }
.bar > i { position:absolute; left:0; top:0; bottom:0; background:#0969da; }
.bar.full > i { background:var(--warn); }
.banner { padding:10px 14px; border-radius:6px; margin-bottom:10px; font-weight:600; }
.banner.warning { background:#fff8c5; border:1px solid #eed888; color:#7d4e00; }
.banner.error { background:#ffebe9; border:1px solid #ffcecb; color:#a40e26; }
.banner.info { background:#ddf4ff; border:1px solid #b6e3ff; color:#0a3069; }
.empty { background:var(--card); border:1px dashed var(--line); border-radius:8px;
  padding:16px; margin-bottom:8px; }
.yes { color:var(--ok); font-weight:600; } .no { color:var(--err); font-weight:600; }
footer { padding:12px 24px; color:var(--mute); font-size:12px; }
a { color:#0969da; }
"""

APP_JS = r"""
"use strict";
const REFRESH_MS = 1000;
const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}
function fmtTime(t) {
  if (t === null || t === undefined) return "\u2013";
  return new Date(t * 1000).toLocaleString();
}
function fmtAgo(s) {
  if (s === null || s === undefined) return "\u2013";
  if (s < 60) return s.toFixed(0) + " s ago";
  if (s < 3600) return (s / 60).toFixed(0) + " min ago";
  return (s / 3600).toFixed(1) + " h ago";
}
function setText(id, text) { $(id).textContent = text; }

function banner(level, text) {
  const b = el("div", text, "banner " + level);
  b.dataset.level = level;
  $("banners").appendChild(b);
}

function renderHeader(s) {
  setText("server", "server " + s.server + " \u00b7 " + (s.serial || ""));
  const role = $("role");
  role.textContent = s.role;
  role.className = "badge " + s.role;
  const a = s.active;
  if (a) {
    setText("active", a.this ? s.server + " (this server)" : a.server);
    let note = "epoch " + a.epoch;
    if (!a.this && s.peer_url) note += " \u00b7 ";
    $("active-note").textContent = note;
    if (!a.this && s.peer_url) {
      const link = el("a", "open its WebAdmin");
      link.href = s.peer_url;
      $("active-note").appendChild(link);
    }
  } else {
    setText("active", "none");
    setText("active-note", "no server has taken over yet");
  }
  setText("epoch", s.epoch || "\u2013");
  setText("epoch-note", s.fenced_by ? "fenced by " + s.fenced_by :
    (s.epoch ? "this server's term" : "not leading"));
  if (s.vip) {
    setText("vip", s.vip.address);
    setText("vip-note", s.vip.held ? "held by this host" : "held by the other server");
  } else {
    setText("vip", "\u2013");
    setText("vip-note", "not configured");
  }
  setText("backends-up", s.backends_up + " of " + s.backends.length);
  setText("margin-note", "quorum margin " + s.quorum_margin);
}

function renderBanners(s) {
  $("banners").replaceChildren();
  if (s.stale) banner("error", "The server has not published a status for " +
      s.status_age.toFixed(0) + " s: its poll loop may be stuck.");
  if (s.role === "fenced")
    banner("error", "This server was fenced by a newer epoch (" + s.fenced_by +
      "): it serves nothing until keepalived promotes it again.");
  if (s.role === "standby") {
    const a = s.active;
    banner("info", "This server is the hot standby" +
      (a && !a.this ? "; the active server is " + a.server + " (epoch " + a.epoch + ")." : "."));
  }
  if (s.role === "takeover") banner("warning", "Taking over: preparing the backends.");
  const pol = s.policy || {};
  if (pol.mismatch && pol.mismatch.length) {
    banner("error", "This server enforces policy " + pol.digest + ", but " +
      pol.mismatch.map(p => p + " enforces " + pol.peers[p]).join(", ") +
      ": a failover changes the rules. Install the same policy.toml on both servers.");
  }
  for (const lic of s.licenses) {
    if (lic.level !== "ok") banner(lic.level, lic.key + ": " + lic.message);
  }
}

function chip(b) {
  const c = el("span", b.index + ":" + b.text, "chip");
  c.dataset.backend = String(b.index);
  if (b.text === "-") c.classList.add("missing");
  else if (b.text.startsWith("!")) c.classList.add("refused");
  else if (b.text.startsWith("(")) c.classList.add("above");
  else c.classList.add("held");
  c.title = b.name + (b.reason ? " \u2013 " + b.reason : "") +
    (b.quantity !== null ? " \u2013 LQ " + b.quantity : "");
  return c;
}

function renderLicenses(s) {
  const body = $("licenses").tBodies[0];
  body.replaceChildren();
  $("no-license").hidden = s.licenses.length > 0;
  $("licenses").hidden = s.licenses.length === 0;
  setText("serial", (s.serial || "") +
    (s.policy && s.policy.digest ? " \u00b7 policy " + s.policy.digest : ""));
  for (const lic of s.licenses) {
    const tr = document.createElement("tr");
    tr.dataset.license = lic.key;
    tr.dataset.level = lic.level;
    tr.appendChild(el("td", lic.key, "mono"));
    tr.appendChild(el("td", lic.tmr_id === null ? "\u2013" : "#" + lic.tmr_id, "num"));
    tr.appendChild(el("td", lic.quantity, "num"));
    const use = el("td", lic.in_use === null ? "\u2013" : lic.in_use, "num in-use");
    if (lic.in_use !== null && lic.quantity > 0) {
      const bar = el("span", null, "bar");
      if (lic.in_use >= lic.quantity) bar.classList.add("full");
      const fill = document.createElement("i");
      fill.style.width = Math.min(100, 100 * lic.in_use / lic.quantity) + "%";
      bar.appendChild(fill);
      use.appendChild(bar);
    }
    tr.appendChild(use);
    const exp = el("td", lic.expires ? fmtTime(lic.expires) : "never", "expiry " + lic.expiry);
    exp.dataset.expiry = lic.expiry;
    if (lic.days_left !== null && lic.days_left !== undefined) {
      exp.appendChild(el("span", lic.days_left > 0
        ? " (" + Math.floor(lic.days_left) + " days left)" : " (expired)", "note"));
    }
    tr.appendChild(exp);
    const bs = el("td", null, "backend-status");
    bs.dataset.status = lic.status;
    for (const b of lic.backends) bs.appendChild(chip(b));
    tr.appendChild(bs);
    tr.appendChild(el("td", lic.message, "state " + lic.level));
    body.appendChild(tr);
  }
}

function renderBackends(s) {
  const body = $("backends").tBodies[0];
  body.replaceChildren();
  for (const b of s.backends) {
    const tr = document.createElement("tr");
    tr.dataset.backend = b.name;
    tr.dataset.up = String(b.up);
    tr.appendChild(el("td", b.index, "num"));
    tr.appendChild(el("td", b.name, "mono"));
    tr.appendChild(el("td", b.up ? "up" : "down", b.up ? "yes" : "no"));
    tr.appendChild(el("td", b.up ? (b.caught_up ? "yes" : "catching up") : "\u2013"));
    tr.appendChild(el("td", b.promised, "mono"));
    tr.appendChild(el("td", b.licenses, "num"));
    body.appendChild(tr);
  }
}

function renderHandles(s) {
  const body = $("handles").tBodies[0];
  body.replaceChildren();
  const h = s.handles;
  const total = h.total === null ? s.handle_count : h.total;
  setText("handle-count", "(" + total + ")");
  for (const x of h.shown) {
    const tr = document.createElement("tr");
    if (x.handle) tr.dataset.handle = x.handle;  // null: hidden from anonymous readers
    tr.appendChild(el("td", x.client_id, "mono"));
    tr.appendChild(el("td", x.user || "\u2013", "user"));
    tr.appendChild(el("td", x.host));
    tr.appendChild(el("td", x.pid === null ? "\u2013" : x.pid, "num"));
    tr.appendChild(el("td", x.firm + ":" + x.product, "mono"));
    tr.appendChild(el("td", x.seats, "num"));
    tr.appendChild(el("td", fmtTime(x.since), "nowrap"));
    tr.appendChild(el("td", fmtAgo(x.heartbeat_ago)));
    tr.appendChild(el("td", x.lease_left.toFixed(0) + " s", "num"));
    const act = el("td", null, "action");
    if (s.can_release && x.handle && x.committed) {
      const b = el("button", "Release", "release");
      b.type = "button";
      b.addEventListener("click", () => releaseHandle(x, b));
      act.appendChild(b);
    }
    tr.appendChild(act);
    body.appendChild(tr);
  }
  const none = $("no-handles");
  if (s.role !== "active") {
    none.hidden = false;
    none.textContent = "Handles are held by the active server.";
  } else if (h.shown.length === 0) {
    none.hidden = false;
    none.textContent = "No seat is checked out.";
  } else if (h.truncated) {
    none.hidden = false;
    none.textContent = "Showing the oldest " + h.shown.length + " of " + h.total + " handles.";
  } else none.hidden = true;
}

// The queued checkouts (client.checkout(..., wait=)), per license in order
function renderQueue(s) {
  const body = $("queue").tBodies[0];
  body.replaceChildren();
  const q = s.queue || {total: null, shown: [], truncated: false};
  setText("queue-count", q.total === null ? "" : "(" + q.total + ")");
  for (const x of q.shown) {
    const tr = document.createElement("tr");
    tr.appendChild(el("td", x.firm + ":" + x.product, "mono"));
    tr.appendChild(el("td", x.position, "num"));
    tr.appendChild(el("td", x.seats, "num"));
    tr.appendChild(el("td", x.user || "\u2013", "user"));
    tr.appendChild(el("td", x.host));
    tr.appendChild(el("td", x.pid === null ? "\u2013" : x.pid, "num"));
    tr.appendChild(el("td", x.client_id, "mono"));
    tr.appendChild(el("td", fmtTime(x.since), "nowrap"));
    tr.appendChild(el("td", x.hold_left.toFixed(1) + " s", "num"));
    body.appendChild(tr);
  }
  const none = $("no-queue");
  none.hidden = false;
  if (s.role !== "active") none.textContent = "The queue is kept by the active server.";
  else if (q.shown.length === 0) none.textContent = "No checkout is waiting.";
  else if (q.truncated) none.textContent = "Showing " + q.shown.length + " of " + q.total + ".";
  else none.hidden = true;
}

// This server's recent refusals, newest first (tmr admin denials)
function renderDenials(s) {
  const body = $("denials").tBodies[0];
  body.replaceChildren();
  const d = s.denials_recent || {total: null, shown: [], truncated: false};
  setText("denial-count", d.total === null ? "" : "(" + d.total + ")");
  for (const x of d.shown) {
    const tr = document.createElement("tr");
    tr.appendChild(el("td", fmtTime(x.at), "nowrap"));
    tr.appendChild(el("td", x.firm + ":" + x.product, "mono"));
    tr.appendChild(el("td", x.seats, "num"));
    tr.appendChild(el("td", x.user || "\u2013", "user"));
    tr.appendChild(el("td", x.host || "\u2013"));
    tr.appendChild(el("td", x.pid ? x.pid : "\u2013", "num"));
    tr.appendChild(el("td", x.code, "mono"));
    tr.appendChild(el("td", (x.owner || "\u2013").slice(0, 12), "mono"));
    tr.appendChild(el("td", x.rule || ""));
    body.appendChild(tr);
  }
  const none = $("no-denials");
  none.hidden = false;
  if (d.total === null) none.textContent = "Shown while this page is open.";
  else if (d.shown.length === 0) none.textContent = "No checkout was refused by this server.";
  else if (d.truncated) none.textContent = "Showing the newest " + d.shown.length + ".";
  else none.hidden = true;
}

// An administrator frees a handle (like lmremove): committed through the quorum first.
async function releaseHandle(x, button) {
  const who = (x.user || x.client_id) + (x.host ? "@" + x.host : "");
  if (!window.confirm("Release " + x.seats + " seat(s) of " + x.firm + ":" + x.product +
                      " held by " + who + "?")) return;
  button.disabled = true;
  const out = $("release-result");
  out.hidden = false;
  try {
    const r = await fetch("api/release", {
      method: "POST", cache: "no-store", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-TMR-Request": "release"},
      body: JSON.stringify({handle: x.handle}),
    });
    const a = await r.json();
    out.dataset.result = a.ok ? "released" : "error";
    out.textContent = a.ok ? "Released " + x.handle + " (committed by the backends)."
      : "Not released: " + a.code + ": " + a.error;
  } catch (err) {
    out.dataset.result = "error";
    out.textContent = "Not released: " + err.message;
  }
}

async function refresh() {
  try {
    const r = await fetch("api/status", {cache: "no-store", credentials: "same-origin"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    const s = await r.json();
    renderHeader(s);
    renderBanners(s);
    renderLicenses(s);
    renderBackends(s);
    renderHandles(s);
    renderQueue(s);
    renderDenials(s);
    document.body.dataset.role = s.role;
    setText("mode", s.can_release ? "administrator view" : "read-only view");
    document.body.dataset.loaded = "true";
    setText("updated", "updated " + new Date().toLocaleTimeString());
  } catch (err) {
    setText("updated", "cannot reach the server (" + err.message + "); retrying");
    document.body.dataset.loaded = "error";
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}
refresh();
"""
