// tidings dashboard: a small client of the /v1 API. No framework and no build step: the DOM is built with `h`
// (text is always set as text, never parsed as HTML), pages are functions of the URL, and the chart is inline SVG.

const main = document.getElementById("main");
const SVG = "http://www.w3.org/2000/svg";
const LIVE = ["accepted", "scheduled", "processing"];
const FAILED = ["sending_failed", "rejected", "expired", "delivery_failed"];
const STATUSES = ["accepted", "scheduled", "processing", "sent", "delivered", "delivery_failed",
  "sending_failed", "rejected", "expired", "canceled"];
const FILTERS = ["status", "channel", "tag", "use_case", "reference", "id", "provider_message_id", "recipient",
  "created_after", "created_before"];
const USE_CASES = ["transactional", "conversational", "marketing", "promotional"];
const POLL_MS = 3000;

let me = null; // {name, scope, open}
let generation = 0; // bumps on every navigation: stale pollers and fetches stop

// ---- DOM helpers ----------------------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  el.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false)
    .map((c) => (c instanceof Node ? c : String(c))));
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  setAttrs(el, attrs);
  el.append(...children.flat(Infinity).filter((c) => c !== null && c !== undefined)
    .map((c) => (c instanceof Node ? c : String(c))));
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
}

function link(href, ...children) {
  return h("a", { href }, ...children);
}

function toast(text, error = false) {
  const box = document.getElementById("toast");
  const p = h("p", { class: error ? "error" : "" }, text);
  box.replaceChildren(p);
  setTimeout(() => { if (p.isConnected) p.remove(); }, error ? 8000 : 4000);
}

// ---- time -----------------------------------------------------------------------------------------------------

const pad = (n) => String(n).padStart(2, "0");

function fmtTime(iso, zone) {
  if (!iso) return "—";
  const d = new Date(iso);
  const opts = { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    second: "2-digit", hourCycle: "h23" };
  if (zone) opts.timeZone = zone;
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-CA", opts).formatToParts(d)
    .map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day} ${parts.hour}:${parts.minute}:${parts.second}`;
}

function clock(iso, zone, seconds = true) {
  const opts = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  if (seconds) opts.second = "2-digit";
  if (zone) opts.timeZone = zone;
  return new Intl.DateTimeFormat("en-GB", opts).format(new Date(iso));
}

function localZone() {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
}

function duration(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${pad(seconds % 60)} s`;
  const hours = Math.floor(seconds / 3600);
  if (hours < 48) return `${hours} h ${pad(Math.floor((seconds % 3600) / 60))} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

// Countdowns tick every second in place: elements carry data-until and show the time left.
function countdown(until) {
  const el = h("span", { class: "countdown", "data-until": until });
  tick(el);
  return el;
}

function tick(el) {
  const left = (new Date(el.dataset.until) - Date.now()) / 1000;
  el.textContent = left > 0 ? duration(left) : "ending";
}

setInterval(() => document.querySelectorAll("[data-until]").forEach(tick), 1000);

// ---- API ------------------------------------------------------------------------------------------------------

function csrf() {
  const m = document.cookie.match(/(?:^|;\s*)tidings_csrf=([^;]*)/);
  return m ? m[1] : "";
}

class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super([e.field, e.rule].filter(Boolean).join(": ") || `HTTP ${status}`);
    this.status = status;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (resp.status === 401 && path !== "/ui/session") {
    me = null;
    navigate(`/login?next=${encodeURIComponent(location.pathname + location.search)}`, true);
    throw new ApiError(401, json);
  }
  if (!resp.ok) throw new ApiError(resp.status, json);
  return json;
}

const isAdmin = () => me && me.scope === "admin";

// ---- routing --------------------------------------------------------------------------------------------------

function navigate(url, replace = false) {
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  render();
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a[href]");
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || a.target) return;
  ev.preventDefault();
  navigate(url.pathname + url.search);
});

window.addEventListener("popstate", render);

document.getElementById("logout").addEventListener("click", async () => {
  await fetch("/ui/logout", { method: "POST", credentials: "same-origin" });
  me = null;
  navigate("/login");
});

async function render() {
  const gen = ++generation;
  const path = location.pathname;
  delete main.dataset.loaded; // set again once the page shows its data (the browser tests wait for it)
  document.querySelectorAll("[data-nav]").forEach((a) => {
    const active = (a.dataset.nav === "overview" && path === "/")
      || (a.dataset.nav === "messages" && path.startsWith("/messages"));
    if (active) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  });
  if (path === "/login") {
    // Without tokens configured (loopback only) there is nothing to log in with.
    const open = await fetch("/ui/me", { credentials: "same-origin" }).then((r) => (r.ok ? r.json() : null))
      .catch(() => null);
    if (gen !== generation) return;
    if (open && open.open) return navigate("/", true);
    return loginPage();
  }
  if (!me) {
    try {
      me = await api("GET", "/ui/me");
    } catch {
      return; // api() went to the login page
    }
    if (gen !== generation) return;
  }
  showWho();
  try {
    if (path === "/") await overviewPage(gen);
    else if (path === "/messages") await messagesPage(gen);
    else if (path.startsWith("/messages/")) await messagePage(gen, decodeURIComponent(path.slice(10)));
    else main.replaceChildren(h("h1", {}, "Not found"), link("/", "Back to the overview"));
  } catch (e) {
    if (gen === generation && !(e instanceof ApiError && e.status === 401)) {
      main.replaceChildren(h("h1", {}, "Something went wrong"), h("p", { class: "error-text" }, e.message));
    }
  }
}

function showWho() {
  const who = document.getElementById("who");
  who.textContent = me ? (me.open ? "open access (no tokens configured)" : `${me.name} · ${me.scope}`) : "";
  document.getElementById("logout").hidden = !me || me.open;
}

// ---- login ----------------------------------------------------------------------------------------------------

function loginPage() {
  document.getElementById("who").textContent = "";
  document.getElementById("logout").hidden = true;
  const error = h("p", { class: "error-text", id: "login-error", role: "alert" });
  const input = h("input", { type: "password", name: "token", id: "token", autocomplete: "current-password",
    required: true });
  const form = h("form", { id: "login-form" },
    h("label", { for: "token" }, "API token", input),
    h("button", { type: "submit" }, "Log in"),
    error);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      me = await api("POST", "/ui/session", { token: input.value });
      const next = new URLSearchParams(location.search).get("next");
      navigate(next && next.startsWith("/") && !next.startsWith("//") ? next : "/", true);
    } catch (e) {
      error.textContent = e.status === 401 ? "That token is not configured on this server." : e.message;
    }
  });
  main.replaceChildren(h("section", { class: "panel login" },
    h("h1", {}, "Log in"),
    h("p", { class: "muted" }, "Use one of the server's API tokens ([[api.tokens]]). The token is not stored in "
      + "the browser: the server keeps a session for 8 hours."),
    form));
  input.focus();
}

// ---- overview -------------------------------------------------------------------------------------------------

async function overviewPage(gen) {
  const day = new URLSearchParams(location.search).get("window") === "24h";
  const span = day ? { window: "24h", bins: 96, minutes: 15, title: "Last 24 hours, per 15 minutes" }
    : { window: "1h", bins: 60, minutes: 1, title: "Last hour, per minute" };
  const channelsBox = h("div", { class: "scroll", id: "channels" }, h("p", { class: "muted" }, "Loading…"));
  const chartBox = h("div", { class: "chart", id: "chart" }, emptyChart());
  const errorsBox = h("div", { class: "scroll", id: "errors" });
  main.replaceChildren(
    h("h1", {}, "Overview"),
    h("section", { class: "panel", "aria-labelledby": "h-channels" },
      h("h2", { id: "h-channels" }, "Channels"), channelsBox),
    h("div", { class: "grid" },
      h("section", { class: "panel", "aria-labelledby": "h-chart" },
        h("h2", { id: "h-chart" }, span.title), chartBox,
        h("nav", { class: "legend", "aria-label": "Chart window" },
          day ? link("/", "Last hour") : h("strong", {}, "Last hour"), " · ",
          day ? h("strong", {}, "24 hours") : link("/?window=24h", "24 hours")),
        h("div", { class: "legend" }, h("span", { class: "sent" }, "sent"), h("span", { class: "failed" }, "failed"),
          h("span", { class: "deferred" }, "deferred"))),
      h("section", { class: "panel", "aria-labelledby": "h-errors" },
        h("h2", { id: "h-errors" }, "Last errors"), errorsBox)));
  while (gen === generation) {
    try {
      const [channels, stats, timeline] = await Promise.all([
        api("GET", "/v1/channels"), api("GET", "/v1/stats"), api("GET", `/v1/stats/timeline?window=${span.window}`)]);
      if (gen !== generation) return;
      channelsBox.replaceChildren(channelTable(channels.items));
      chartBox.replaceChildren(chart(timeline, span));
      errorsBox.replaceChildren(...[errorTable(stats.last_errors)].flat());
      main.dataset.loaded = "true";
    } catch (e) {
      if (gen !== generation || e.status === 401) return;
      toast(`Refresh failed: ${e.message}`, true);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

function channelTable(items) {
  const admin = isAdmin();
  const sum = (counts, keys) => keys.reduce((n, k) => n + (counts[k] || 0), 0);
  return h("table", { id: "channel-table" },
    h("thead", {}, h("tr", {},
      h("th", {}, "Channel"), ...LIVE.map((k) => h("th", { class: "num" }, k)),
      h("th", { class: "num", title: "Accepted by the provider in the last 24 h" }, "sent 24 h"),
      h("th", { class: "num", title: "Failed, rejected or expired in the last 24 h" }, "failed 24 h"),
      h("th", {}, "Oldest due"), h("th", {}, "Rate limit"), h("th", {}, "State"),
      admin ? h("th", {}, "Actions") : null)),
    h("tbody", {}, items.map((c) => h("tr", { "data-channel": c.name },
      h("td", {}, link(`/messages?channel=${encodeURIComponent(c.name)}`, c.name), " ",
        h("span", { class: "muted" }, c.kind)),
      ...LIVE.map((k) => h("td", { class: "num", "data-status": k },
        link(`/messages?channel=${encodeURIComponent(c.name)}&status=${k}`,
          // An estimate on a very large backlog (see the API's live_estimated).
          (c.live_estimated ? "≈ " : "") + String(c.live[k] || 0)))),
      h("td", { class: "num" }, String(sum(c.last_24h, ["sent"]))),
      h("td", { class: "num" }, String(sum(c.last_24h, FAILED))),
      h("td", {}, c.oldest_due_seconds == null ? "—" : duration(c.oldest_due_seconds)),
      h("td", {}, c.rate_per_sec == null ? "unlimited" : `${c.rate_per_sec}/s`),
      h("td", { class: "state wrap" }, c.paused
        ? h("span", {}, h("span", { class: "paused" }, "paused"), " ", c.pause_reason || "", " · ",
          countdown(c.paused_until), " left (until ", clock(c.paused_until), ")")
        : "running"),
      admin ? h("td", {}, c.paused
        ? h("button", { type: "button", class: "quiet", "data-action": "resume",
          onclick: () => resumeChannel(c.name) }, "Resume")
        : h("button", { type: "button", class: "quiet", "data-action": "pause",
          onclick: () => pauseChannel(c.name) }, "Pause")) : null))));
}

function errorTable(errors) {
  if (!errors.length) return h("p", { class: "muted" }, "No failures recorded.");
  const byReason = new Map();
  for (const e of errors) byReason.set(e.reason, (byReason.get(e.reason) || 0) + 1);
  const summary = h("p", { class: "muted", id: "error-reasons" }, "By reason: ",
    [...byReason].sort((a, b) => b[1] - a[1]).map(([r, n]) => `${r} × ${n}`).join(", "));
  return [summary, h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "At"), h("th", {}, "Channel"), h("th", {}, "Status"),
      h("th", {}, "Reason"), h("th", {}, "Message"))),
    h("tbody", {}, errors.map((e) => h("tr", {},
      h("td", {}, fmtTime(e.at)), h("td", {}, e.channel), h("td", {}, badge(e.status)), h("td", {}, e.reason),
      h("td", { class: "mono" }, link(`/messages/${e.message_id}`, e.message_id.slice(-12)))))))];
}

const CHART = { w: 600, h: 180, left: 34, right: 8, top: 10, bottom: 22 };

function emptyChart() {
  return s("svg", { viewBox: `0 0 ${CHART.w} ${CHART.h}`, role: "img", "aria-label": "Loading chart" });
}

// A line per series over `span.bins` bins of `span.minutes` minutes each, the last ending now; minutes the API left
// out are zero. The viewBox is fixed, so a refresh never changes the layout.
function chart(timeline, span) {
  const { bins, minutes } = span;
  const now = Math.floor(Date.now() / 60000);
  const series = { sent: new Array(bins).fill(0), failed: new Array(bins).fill(0),
    deferred: new Array(bins).fill(0) };
  for (const m of timeline.minutes) {
    const ago = now - Math.floor(new Date(m.minute).getTime() / 60000);
    const i = bins - 1 - Math.floor(ago / minutes);
    if (i < 0 || i >= bins) continue;
    for (const k of Object.keys(series)) series[k][i] += m[k];
  }
  const max = Math.max(1, ...Object.values(series).flat());
  const { w, h: height, left, right, top, bottom } = CHART;
  const x = (i) => left + (i * (w - left - right)) / (bins - 1);
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  const total = (k) => series[k].reduce((a, b) => a + b, 0);
  const label = `${span.title}: ${total("sent")} sent, ${total("failed")} failed, ${total("deferred")} deferred`;
  const whole = bins * minutes;
  const ago = (m) => (m >= 120 ? `−${m / 60} h` : `−${m} min`);
  return s("svg", { viewBox: `0 0 ${w} ${height}`, role: "img", "aria-label": label },
    s("title", {}, label),
    s("line", { class: "axis", x1: left, y1: y(0), x2: w - right, y2: y(0) }),
    s("line", { class: "axis", x1: left, y1: y(max), x2: w - right, y2: y(max) }),
    s("text", { x: left - 4, y: y(max) + 4, "text-anchor": "end" }, String(max)),
    s("text", { x: left - 4, y: y(0) + 4, "text-anchor": "end" }, "0"),
    s("text", { x: left, y: height - 4 }, ago(whole)),
    s("text", { x: x(bins / 2 - 1), y: height - 4, "text-anchor": "middle" }, ago(whole / 2)),
    s("text", { x: w - right, y: height - 4, "text-anchor": "end" }, "now"),
    ...Object.keys(series).map((k) => s("polyline", { class: k,
      points: series[k].map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ") })));
}

async function pauseChannel(name) {
  const minutes = h("input", { type: "number", name: "minutes", id: "pause-minutes", min: "1", max: "43200",
    value: "15", required: true });
  const reason = h("input", { type: "text", name: "reason", id: "pause-reason", maxlength: "200",
    value: "paused from the dashboard", required: true });
  const ok = await ask(h("h2", {}, `Pause channel ${name}`),
    h("p", { class: "muted" }, "Every worker stops sending on it until the pause ends or someone resumes it."),
    h("label", {}, "Minutes", minutes), h("label", {}, "Reason", reason), "Pause channel");
  if (!ok) return;
  const until = new Date(Date.now() + Number(minutes.value) * 60000).toISOString();
  await act(() => api("POST", `/v1/channels/${encodeURIComponent(name)}/pause`,
    { until, reason: reason.value }), `Channel ${name} paused`);
}

async function resumeChannel(name) {
  await act(() => api("POST", `/v1/channels/${encodeURIComponent(name)}/resume`, {}), `Channel ${name} resumed`);
}

async function act(call, done) {
  try {
    await call();
    toast(done);
  } catch (e) {
    if (e.status !== 401) toast(e.message, true);
  }
  render();
}

// A modal confirmation built from `parts`, the last being the confirm button's text. Resolves true on confirm.
function ask(...parts) {
  const confirmText = parts.pop();
  const dialog = document.getElementById("dialog");
  const form = document.getElementById("dialog-form");
  form.replaceChildren(...parts, h("div", { class: "actions" },
    h("button", { type: "submit", value: "ok", id: "confirm", class: "danger" }, confirmText),
    h("button", { type: "submit", value: "cancel", class: "quiet", formnovalidate: true }, "Keep as is")));
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

// ---- messages -------------------------------------------------------------------------------------------------

function badge(status) {
  return h("span", { class: `badge ${status}` }, status.replaceAll("_", " "));
}

function recipientText(r) {
  if (!r || typeof r !== "object") return String(r ?? "");
  return r.phone || r.email || r.user_id || r.token || JSON.stringify(r);
}

function currentFilter() {
  const q = new URLSearchParams(location.search);
  const f = {};
  for (const k of FILTERS) if (q.get(k)) f[k] = q.get(k);
  return f;
}

function toLocalInput(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

async function messagesPage(gen) {
  const filter = currentFilter();
  const q = new URLSearchParams(location.search);
  const channels = (await api("GET", "/v1/channels")).items.map((c) => c.name);
  if (gen !== generation) return;
  const field = (name, label, input) => h("label", { for: `f-${name}` }, label, input);
  const select = (name, options) => h("select", { name, id: `f-${name}` }, h("option", { value: "" }, "any"),
    options.map((o) => h("option", { value: o, selected: filter[name] === o }, o)));
  const text = (name, placeholder) => h("input", { type: "text", name, id: `f-${name}`, value: filter[name] || "",
    placeholder });
  const time = (name) => h("input", { type: "datetime-local", name, id: `f-${name}`,
    value: toLocalInput(filter[name]) });
  const form = h("form", { class: "filters", id: "filters", role: "search" },
    field("status", "Status", select("status", STATUSES)),
    field("channel", "Channel", select("channel", channels)),
    field("tag", "Tag", text("tag", "e.g. black-friday")),
    field("use_case", "Use case", select("use_case", USE_CASES)),
    field("reference", "Reference", text("reference", "your id")),
    field("id", "Message id", text("id", "UUID")),
    field("provider_message_id", "Provider id", text("provider_message_id", "as in a receipt")),
    field("recipient", "Recipient (exact)", text("recipient", "+31612345678")),
    field("created_after", "Created after", time("created_after")),
    field("created_before", "Created before", time("created_before")),
    h("div", { class: "actions" }, h("button", { type: "submit", id: "apply" }, "Filter"),
      link("/messages", "Clear")));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const out = new URLSearchParams();
    for (const [k, v] of new FormData(form)) {
      if (!v) continue;
      out.set(k, k.startsWith("created_") ? new Date(v).toISOString() : v.trim());
    }
    navigate(`/messages${out.size ? `?${out}` : ""}`);
  });

  const results = h("div", { class: "scroll", id: "results" }, h("p", { class: "muted" }, "Loading…"));
  const bulk = isAdmin() && Object.keys(filter).some((k) => k !== "id") ? bulkBar(filter) : null;
  main.replaceChildren(h("h1", {}, "Messages"), h("section", { class: "panel" }, form,
    h("p", { class: "muted" }, `Times are in ${localZone()}.`)),
    h("section", { class: "panel" }, bulk, results));

  let page;
  if (filter.id) {
    try {
      const one = await api("GET", `/v1/messages/${encodeURIComponent(filter.id)}`);
      page = { items: [one], next_cursor: null };
    } catch (e) {
      if (e.status !== 404 && e.status !== 400) throw e;
      page = { items: [], next_cursor: null };
    }
  } else {
    const params = new URLSearchParams(filter);
    if (q.get("cursor")) params.set("cursor", q.get("cursor"));
    params.set("limit", "50");
    page = await api("GET", `/v1/messages?${params}`);
  }
  if (gen !== generation) return;
  results.replaceChildren(messageTable(page.items, page.searched_back_to), pager(q, page.next_cursor));
  main.dataset.loaded = "true";
}

function messageTable(items, searchedBackTo) {
  // A filter without an index searches a bounded slice of the history per page (see the API's next_cursor).
  const partial = searchedBackTo ? h("p", { class: "muted", id: "searched" },
    `Searched messages created since ${fmtTime(searchedBackTo)}; older ones may match too: “Older →” searches on.`)
    : null;
  if (!items.length) {
    return h("div", {}, h("p", { class: "muted", id: "no-results" },
      searchedBackTo ? "No message matches this filter yet." : "No message matches this filter."), partial);
  }
  return h("div", {}, partial, h("table", { id: "message-table" },
    h("thead", {}, h("tr", {}, h("th", {}, "Created"), h("th", {}, "Channel"), h("th", {}, "Status"),
      h("th", {}, "Recipient"), h("th", {}, "Use case"), h("th", {}, "Tags"), h("th", {}, "Reference"),
      h("th", { class: "num" }, "Attempts"), h("th", {}, "Last error"))),
    h("tbody", {}, items.map((m) => h("tr", { "data-id": m.id },
      h("td", {}, link(`/messages/${m.id}`, fmtTime(m.created_at))),
      h("td", {}, m.channel), h("td", {}, badge(m.status)),
      h("td", { class: "mono" }, recipientText(m.recipient)), h("td", {}, m.use_case),
      h("td", {}, m.tags.join(", ")), h("td", {}, m.reference || ""),
      h("td", { class: "num" }, `${m.attempts}/${m.max_attempts}`),
      h("td", {}, m.last_error || ""))))));
}

function pager(q, next) {
  const first = q.get("cursor") ? (() => {
    const p = new URLSearchParams(q);
    p.delete("cursor");
    return link(`/messages${p.size ? `?${p}` : ""}`, "First page");
  })() : null;
  let more = null;
  if (next) {
    const p = new URLSearchParams(q);
    p.set("cursor", next);
    more = link(`/messages?${p}`, "Older →");
  }
  return h("nav", { class: "pager", "aria-label": "Pages" }, first, more);
}

function describe(filter) {
  return Object.entries(filter).map(([k, v]) => `${k} = ${v}`).join(", ");
}

function bulkBar(filter) {
  const run = async (action) => {
    const body = { filter };
    let when = null;
    if (action === "reschedule") {
      when = h("input", { type: "datetime-local", id: "bulk-when", required: true,
        value: toLocalInput(new Date(Date.now() + 3600000).toISOString()) });
    }
    let count;
    try {
      count = (await api("POST", `/v1/messages/${action}`, { ...body, dry_run: true,
        scheduled_for: action === "reschedule" ? new Date(Date.now() + 3600000).toISOString() : undefined })).count;
    } catch (e) {
      toast(e.message, true);
      return;
    }
    if (count === 0) {
      toast(`No message matching this filter can be ${action === "cancel" ? "canceled" : `${action}d`}.`);
      return;
    }
    const ok = await ask(h("h2", {}, `${action[0].toUpperCase()}${action.slice(1)} ${count} message${count === 1 ? "" : "s"}?`),
      h("p", { id: "bulk-count", "data-count": count }, `${count} message${count === 1 ? "" : "s"} match `,
        h("span", { class: "mono" }, describe(filter)), " and can be changed."),
      when ? h("label", {}, "New send time", when) : null,
      `${action[0].toUpperCase()}${action.slice(1)} ${count}`);
    if (!ok) return;
    await act(() => api("POST", `/v1/messages/${action}`, { ...body, expect_count: count,
      scheduled_for: when ? new Date(when.value).toISOString() : undefined }),
    `${count} message${count === 1 ? "" : "s"}: ${action} done`);
  };
  return h("div", { class: "actions", id: "bulk" }, h("span", { class: "muted" }, "Everything matching:"),
    h("button", { type: "button", class: "quiet", "data-bulk": "cancel", onclick: () => run("cancel") }, "Cancel…"),
    h("button", { type: "button", class: "quiet", "data-bulk": "retry", onclick: () => run("retry") }, "Retry…"),
    h("button", { type: "button", class: "quiet", "data-bulk": "reschedule", onclick: () => run("reschedule") },
      "Reschedule…"));
}

// ---- one message ----------------------------------------------------------------------------------------------

// The event in words. The details stay one click away.
function human(e, message) {
  const d = e.detail || {};
  const zone = message.recipient && message.recipient.timezone;
  const at = (iso, secs = true) => `${clock(iso, zone, secs)} ${zone || localZone()}`;
  const attempt = e.attempt ? `attempt ${e.attempt}` : "an attempt";
  const http = d.http_status ? `HTTP ${d.http_status}` : e.reason.replace(/^http_/, "HTTP ");
  switch (e.reason) {
    case "enqueued":
      return e.status === "scheduled" && message.scheduled_for
        ? `enqueued, scheduled for ${fmtTime(message.scheduled_for)}` : "enqueued";
    case "quiet_hours":
      return d.until ? `held by quiet hours until ${at(d.until, false)}` : "held by quiet hours";
    case "rate_limited": {
      const secs = Number(d.retry_after);
      if (d.retry_after && Number.isFinite(secs)) {
        const until = new Date(new Date(e.at).getTime() + secs * 1000).toISOString();
        return `channel paused by a ${d.http_status || 429} until ${clock(until)} ${localZone()} (Retry-After ${secs} s)`;
      }
      if (d.retry_after) return `channel paused by a ${d.http_status || 429} (Retry-After ${d.retry_after})`;
      return `channel paused by a ${d.http_status || 429} (no Retry-After: backoff)`;
    }
    case "provider_accepted":
      return "sent: the provider accepted it";
    case "attempts_exhausted":
      return `failed for good after ${attempt}: ${d.last_error ? d.last_error.replace(/^http_/, "HTTP ") : "no attempts left"}`;
    case "validity_passed":
      return d.deferred_for ? `expired: its validity ended while ${d.deferred_for.replace("_", " ")} held it`
        : "expired: its validity ended";
    case "opted_out":
      return "rejected: the recipient opted out";
    case "fallback_rejected":
    case "fallback_sending_failed":
    case "fallback_expired":
      return `fallback step ${d.step}: created because the ${d.previous_channel} message ${e.reason.slice(9).replace("_", " ")}`;
    case "fallback_awaiting_receipt":
      return `fallback step ${d.step}: sent unless the ${d.previous_channel} message is delivered by ${at(d.receipt_wait_until)}`;
    case "fallback_not_needed":
      return "canceled: the previous message of the chain was delivered";
    case "fallback_delivery_failed":
      return "released: the previous message of the chain was not delivered";
    case "released":
      return "released by a worker shutting down (no attempt spent)";
    case "operator_cancel":
      return `canceled by ${d.by || "an operator"}`;
    case "operator_retry":
      return `retried by ${d.by || "an operator"}`;
    case "operator_reschedule":
      return `rescheduled by ${d.by || "an operator"}`;
    default:
      break;
  }
  if (e.status === "delivered") return "delivered (receipt)";
  if (e.status === "delivery_failed") return `delivery failed (receipt): ${e.reason}`;
  if (e.status === "scheduled" && /^http_|timeout|transport|connect/.test(e.reason)) {
    return `${attempt} failed: ${http}; retrying`;
  }
  if (FAILED.includes(e.status)) return `${e.status.replace("_", " ")}: ${http}`;
  return `${e.status.replace("_", " ")}: ${e.reason.replaceAll("_", " ")}`;
}

function eventClass(e) {
  if (FAILED.includes(e.status)) return "bad";
  if (e.status === "sent" || e.status === "delivered") return "good";
  if (e.status === "scheduled" && e.reason !== "enqueued") return "held";
  return "";
}

async function messagePage(gen, id) {
  const detail = await api("GET", `/v1/messages/${encodeURIComponent(id)}`).catch((e) => {
    if (e.status === 404 || e.status === 400) return null;
    throw e;
  });
  if (gen !== generation) return;
  if (!detail) {
    main.replaceChildren(h("h1", {}, "No such message"), h("p", {}, `No message ${id} (or it was pruned).`),
      link("/messages", "All messages"));
    return;
  }
  const m = detail; // the message's fields, with content and events
  const json = (v) => h("pre", {}, JSON.stringify(v, null, 2));
  const facts = [
    ["Status", badge(m.status)], ["Channel", link(`/messages?channel=${encodeURIComponent(m.channel)}`, m.channel)],
    ["Recipient", h("span", { class: "mono", id: "recipient" }, recipientText(m.recipient))],
    ["Use case", m.use_case], ["Priority", String(m.priority)],
    ["Tags", m.tags.length ? m.tags.map((t, i) => [i ? ", " : "", link(`/messages?tag=${encodeURIComponent(t)}`, t)]) : "—"],
    ["Reference", m.reference || "—"], ["Provider message id", h("span", { class: "mono" }, m.provider_message_id || "—")],
    ["Attempts", `${m.attempts} of ${m.max_attempts}`], ["Last error", m.last_error || "—"],
    ["Created", fmtTime(m.created_at)], ["Scheduled for", fmtTime(m.scheduled_for)],
    ["Next run", fmtTime(m.run_at)], ["Expires", fmtTime(m.expires_at)],
  ];
  main.replaceChildren(
    h("p", {}, link("/messages", "← Messages")),
    h("h1", {}, "Message ", h("span", { class: "mono" }, m.id)),
    isAdmin() ? messageActions(m) : null,
    h("div", { class: "grid" },
      h("section", { class: "panel", "aria-labelledby": "h-facts" }, h("h2", { id: "h-facts" }, "Facts"),
        h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
        h("details", {}, h("summary", {}, "Content"), json(detail.content)),
        detail.chain.length ? [h("h2", { id: "h-chain" }, "Fallback chain"),
          h("ol", { class: "chain", id: "chain", start: 0 }, detail.chain.map((c) => h("li", {},
            c.id === m.id ? h("strong", {}, c.channel) : link(`/messages/${c.id}`, c.channel), " ", badge(c.status),
            c.trigger ? h("span", { class: "muted" }, ` after ${c.trigger.replace("_", " ")}`) : null)))] : null),
      h("section", { class: "panel", "aria-labelledby": "h-timeline" }, h("h2", { id: "h-timeline" }, "Timeline"),
        h("ol", { class: "timeline", id: "timeline" }, detail.events.map((e) => h("li", { class: eventClass(e),
          "data-reason": e.reason },
          h("div", {}, h("strong", { class: "human" }, human(e, m))),
          h("div", { class: "muted" }, fmtTime(e.at), " · ", e.status.replace("_", " "),
            e.attempt ? ` · attempt ${e.attempt}` : ""),
          h("details", {}, h("summary", {}, "Detail"),
            json({ reason: e.reason, status: e.status, attempt: e.attempt, started_at: e.started_at,
              detail: e.detail })))))),
      (detail.callbacks || []).length ? callbacksPanel(detail.callbacks) : null));
  main.dataset.loaded = "true";
}

// The status callbacks sent for a message: what each told, where (host only), and how its delivery went.
function callbacksPanel(callbacks) {
  const state = (c) => {
    if (c.delivered_at) return `delivered ${fmtTime(c.delivered_at)}`;
    if (c.given_up_at) return `given up ${fmtTime(c.given_up_at)}`;
    return c.next_attempt_at ? `pending, next attempt ${fmtTime(c.next_attempt_at)}` : "pending";
  };
  return h("section", { class: "panel", "aria-labelledby": "h-callbacks" }, h("h2", { id: "h-callbacks" }, "Callbacks"),
    h("ol", { class: "timeline", id: "callbacks" }, callbacks.map((c) => h("li", {
      class: c.delivered_at ? "good" : c.given_up_at ? "bad" : "held", "data-status": c.status },
      h("div", {}, h("strong", {}, `message.${c.status}`), " → ", h("span", { class: "mono" }, c.host)),
      h("div", { class: "muted" }, state(c), ` · ${c.attempts} attempt${c.attempts === 1 ? "" : "s"}`,
        c.last_error ? ` · last error ${c.last_error.replace(/^http_/, "HTTP ")}` : "")))));
}

function messageActions(m) {
  const path = `/v1/messages/${m.id}`;
  const live = ["accepted", "scheduled"].includes(m.status);
  const retryable = [...FAILED, "canceled"].includes(m.status);
  const reschedule = async () => {
    const when = h("input", { type: "datetime-local", id: "reschedule-when", required: true,
      value: toLocalInput(new Date(Date.now() + 3600000).toISOString()) });
    if (!await ask(h("h2", {}, "Reschedule"), h("label", {}, "New send time", when), "Reschedule")) return;
    await act(() => api("POST", `${path}/reschedule`, { scheduled_for: new Date(when.value).toISOString() }),
      "Rescheduled");
  };
  const cancel = async () => {
    if (!await ask(h("h2", {}, "Cancel this message?"), h("p", {}, "It will not be sent."), "Cancel message")) return;
    await act(() => api("POST", `${path}/cancel`, {}), "Canceled");
  };
  if (!live && !retryable) return null;
  return h("div", { class: "actions panel", id: "actions" },
    live ? h("button", { type: "button", class: "danger", "data-action": "cancel", onclick: cancel }, "Cancel")
      : null,
    live ? h("button", { type: "button", class: "quiet", "data-action": "reschedule", onclick: reschedule },
      "Reschedule…") : null,
    retryable ? h("button", { type: "button", "data-action": "retry",
      onclick: () => act(() => api("POST", `${path}/retry`, {}), "Queued again") }, "Retry") : null);
}

render();
