import { createHash } from 'node:crypto';

/**
 * The status page: one self-contained HTML document (no external assets, no
 * framework) that reads /_archway/status and /_archway/cache with the admin
 * token and redraws every few seconds. The token comes from the URL fragment
 * (`/_archway/#token=…`, never sent to a server) or a form, and is kept in
 * sessionStorage for the tab's life. No inline style attributes: the
 * Content-Security-Policy allows only the one <style> and the one <script>
 * below, by hash (statusPage()).
 */
export const STATUS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>archway status</title>
<link rel="icon" href="data:,">
<style>
  :root { --fg:#1d2430; --muted:#6a7280; --line:#e3e6eb; --cache:#2f80ed; --up:#f2994a; --ok:#27ae60; --bad:#eb5757; --part:#f2c94c; }
  * { box-sizing: border-box; }
  [hidden] { display: none !important; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); background: #f7f8fa; }
  header { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: baseline; padding: .8rem 1rem; background: #fff; border-bottom: 1px solid var(--line); }
  header h1 { font-size: 1.15rem; margin: 0; }
  header small { color: var(--muted); }
  main { display: grid; gap: 1rem; padding: 1rem; grid-template-columns: repeat(auto-fit, minmax(min(100%, 22rem), 1fr)); }
  section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: .8rem 1rem; min-width: 0; }
  section.wide { grid-column: 1 / -1; }
  h2 { font-size: 1rem; margin: 0 0 .6rem; }
  .figures { display: flex; flex-wrap: wrap; gap: .8rem 1.6rem; }
  .figure b { display: block; font-size: 1.3rem; }
  .figure span { color: var(--muted); font-size: .85rem; }
  .bar { height: .7rem; background: var(--line); border-radius: 4px; overflow: hidden; margin: .6rem 0 .2rem; }
  .bar > div { height: 100%; width: 0; background: var(--cache); }
  .scroll { overflow-x: auto; }
  table { border-collapse: collapse; width: 100%; font-size: .9rem; }
  th, td { text-align: left; padding: .3rem .5rem; border-bottom: 1px solid var(--line); vertical-align: top; }
  th { color: var(--muted); font-weight: 600; }
  .chip { display: inline-block; padding: 0 .4rem; margin: .1rem; border-radius: 3px; font-size: .8rem; background: var(--line); }
  .chip.yes { background: var(--ok); color: #fff; } .chip.partial { background: var(--part); } .chip.no { background: var(--line); color: var(--muted); }
  .state-ok { color: var(--ok); font-weight: 600; } .state-down { color: var(--bad); font-weight: 600; }
  .legend span::before { content: ""; display: inline-block; width: .7rem; height: .7rem; margin: 0 .3rem 0 .8rem; border-radius: 2px; background: var(--c); }
  .legend .from-cache { --c: var(--cache); } .legend .from-upstream { --c: var(--up); }
  svg { width: 100%; height: 9rem; display: block; }
  #error { color: var(--bad); }
  form { display: flex; gap: .5rem; flex-wrap: wrap; } input { flex: 1; min-width: 12rem; padding: .4rem; }
  code { font-size: .85rem; }
</style>
</head>
<body>
<header><h1>archway</h1><small id="updated">loading…</small><small id="error" role="alert"></small></header>
<form id="login" hidden><input id="token" type="password" placeholder="admin token" autocomplete="current-password"><button>Show status</button></form>
<main id="main" hidden>
  <section>
    <h2>Cache</h2>
    <div class="figures">
      <div class="figure"><b id="cache-bytes">–</b><span>of <span id="cache-max">–</span></span></div>
      <div class="figure"><b id="cache-blobs">–</b><span>blobs</span></div>
      <div class="figure"><b id="cache-manifests">–</b><span>manifests</span></div>
      <div class="figure"><b id="cache-tags">–</b><span>tags</span></div>
    </div>
    <div class="bar" aria-label="cache use"><div id="cache-fill"></div></div>
  </section>
  <section>
    <h2>Since start</h2>
    <div class="figures">
      <div class="figure"><b id="hit-ratio">–</b><span>hit ratio</span></div>
      <div class="figure"><b id="bytes-cache">–</b><span>served from cache</span></div>
      <div class="figure"><b id="bytes-upstream">–</b><span>served from upstream</span></div>
    </div>
  </section>
  <section class="wide">
    <h2>Last hour <small class="legend"><span class="from-cache">from cache</span><span class="from-upstream">from upstream</span></small></h2>
    <svg id="chart" viewBox="0 0 600 120" preserveAspectRatio="none" role="img" aria-label="bytes served per minute"></svg>
    <small id="hour-ratio"></small>
  </section>
  <section>
    <h2>Upstreams</h2>
    <div class="scroll"><table><thead><tr><th>registry</th><th>state</th><th>failures</th><th>last error</th></tr></thead><tbody id="upstreams"></tbody></table></div>
  </section>
  <section>
    <h2>Platform rules</h2>
    <div class="scroll"><table><thead><tr><th>#</th><th>when</th><th>platform</th><th>mode</th></tr></thead><tbody id="rules"></tbody></table></div>
    <small>Default for clients that cannot read indexes: <code id="platform-default"></code></small>
  </section>
  <section class="wide">
    <h2>Most pulled</h2>
    <div class="scroll"><table><thead><tr><th>image</th><th>pulls</th><th>platforms cached</th></tr></thead><tbody id="images"></tbody></table></div>
  </section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const units = ["B", "KiB", "MiB", "GiB", "TiB"];
function size(n) { let u = 0; while (n >= 1024 && u < units.length - 1) { n /= 1024; u++; } return (u ? n.toFixed(n < 10 ? 1 : 0) : n) + " " + units[u]; }
function cell(text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; }
function row(cells) { const tr = document.createElement("tr"); cells.forEach((c) => tr.append(c)); return tr; }
function setFigure(id, value, text) { const el = $(id); el.dataset.value = String(value); el.textContent = text; }

let token = new URLSearchParams(location.hash.slice(1)).get("token") || sessionStorage.getItem("archway-admin-token");
if (location.hash) history.replaceState(null, "", location.pathname);

async function get(path) {
  const res = await fetch(path, { headers: { authorization: "Bearer " + token }, cache: "no-store" });
  if (res.status === 401) { sessionStorage.removeItem("archway-admin-token"); token = null; showLogin("That token was refused."); throw new Error("refused"); }
  if (!res.ok) throw new Error(path + ": " + res.status);
  return res.json();
}

function showLogin(message) { $("login").hidden = false; $("main").hidden = true; $("error").textContent = message || ""; }

function draw(status, cache) {
  setFigure("cache-bytes", cache.bytes, size(cache.bytes));
  setFigure("cache-max", cache.maxBytes, size(cache.maxBytes));
  setFigure("cache-blobs", cache.blobs, String(cache.blobs));
  setFigure("cache-manifests", cache.manifests, String(cache.manifests));
  setFigure("cache-tags", cache.tags, String(cache.tags));
  $("cache-fill").style.width = Math.min(100, (100 * cache.bytes) / cache.maxBytes).toFixed(1) + "%";
  setFigure("hit-ratio", cache.hitRatio === null ? "" : cache.hitRatio, cache.hitRatio === null ? "–" : (100 * cache.hitRatio).toFixed(1) + " %");
  setFigure("bytes-cache", cache.bytesFromCache, size(cache.bytesFromCache));
  setFigure("bytes-upstream", cache.bytesFromUpstream, size(cache.bytesFromUpstream));

  const minutes = status.traffic.lastHour;
  const peak = Math.max(1, ...minutes.map((m) => m.bytesFromCache + m.bytesFromUpstream));
  const w = 600 / minutes.length;
  const svg = $("chart");
  svg.replaceChildren();
  minutes.forEach((m, i) => {
    const hc = (110 * m.bytesFromCache) / peak, hu = (110 * m.bytesFromUpstream) / peak;
    for (const [h, y, color] of [[hc, 120 - hc, "var(--cache)"], [hu, 120 - hc - hu, "var(--up)"]]) {
      if (h <= 0) continue;
      const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      r.setAttribute("x", String(i * w + 0.5)); r.setAttribute("width", String(Math.max(1, w - 1)));
      r.setAttribute("y", String(y)); r.setAttribute("height", String(h)); r.setAttribute("fill", color);
      svg.append(r);
    }
  });
  const hits = minutes.reduce((a, m) => a + m.hits, 0), misses = minutes.reduce((a, m) => a + m.misses, 0);
  $("hour-ratio").textContent = hits + misses ? "hit ratio this hour: " + ((100 * hits) / (hits + misses)).toFixed(1) + " % of " + (hits + misses) + " requests" : "no traffic this hour";

  $("upstreams").replaceChildren(...status.upstreams.map((u) =>
    row([cell(u.name), cell(u.down ? "down" : "ok", u.down ? "state-down" : "state-ok"), cell(String(u.failures)),
      cell(u.lastError ? u.lastError + " (" + new Date(u.lastErrorAt).toLocaleTimeString() + ")" : "–")])));

  $("platform-default").textContent = status.platform.default;
  const rules = status.platform.rules;
  $("rules").replaceChildren(...(rules.length ? rules.map((r, i) =>
    row([cell(String(i + 1)), cell(Object.entries(r.match).map(([k, v]) => k + "=" + v).join(", ") || "always"), cell(r.platform), cell(r.mode)])) :
    [row([cell(""), cell("no rules: indexes pass through"), cell(""), cell("")])]));

  $("images").replaceChildren(...(status.images.length ? status.images.map((img) => {
    const chips = document.createElement("td");
    for (const p of img.platforms) { const c = document.createElement("span"); c.className = "chip " + p.cached; c.textContent = p.platform; c.title = p.cached; chips.append(c); }
    if (!img.platforms.length) chips.textContent = "–";
    return row([cell(img.repository + ":" + img.tag), cell(String(img.pulls)), chips]);
  }) : [row([cell("nothing pulled yet"), cell(""), cell("")])]));

  $("updated").textContent = "updated " + new Date(status.now).toLocaleTimeString();
  $("error").textContent = "";
}

async function refresh() {
  // Keep what the last refusal said on screen.
  if (!token) return showLogin($("error").textContent);
  try {
    const [status, cache] = await Promise.all([get("/_archway/status"), get("/_archway/cache")]);
    $("login").hidden = true; $("main").hidden = false;
    draw(status, cache);
    document.body.dataset.loaded = "true";
  } catch (err) {
    if (token) $("error").textContent = "refresh failed: " + err.message;
  }
}

$("login").addEventListener("submit", (e) => { e.preventDefault(); token = $("token").value; sessionStorage.setItem("archway-admin-token", token); refresh(); });
if (token) sessionStorage.setItem("archway-admin-token", token);
refresh();
setInterval(refresh, 5000);
</script>
</body>
</html>
`;

export interface StatusPage {
  html: string;
  /** Headers of the page's answer: its Content-Security-Policy and the rest of what keeps it from being framed or leaking. */
  headers: Record<string, string>;
}

/**
 * The page with its Content-Security-Policy, computed once (at start): nothing
 * from elsewhere, no plugin, no frame, no form target; the page's own inline
 * <style> and <script> run because their hashes are listed, and nothing else
 * inline would (an injected tag, or an upstream's manifest someone got a
 * browser to render on this origin, where the admin token lives).
 */
export function statusPage(): StatusPage {
  const hash = (tag: 'style' | 'script') => {
    const found = new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(STATUS_PAGE);
    if (!found?.[1]) throw new Error(`status page without a <${tag}>`);
    return `'sha256-${createHash('sha256').update(found[1], 'utf8').digest('base64')}'`;
  };
  const csp = [
    "default-src 'none'",
    `script-src ${hash('script')}`,
    `style-src ${hash('style')}`,
    // The favicon is an empty data: URL (no request for /favicon.ico).
    'img-src data:',
    // fetch() of /_archway/status and /_archway/cache.
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
  return {
    html: STATUS_PAGE,
    headers: { 'content-security-policy': csp, 'x-frame-options': 'DENY', 'referrer-policy': 'no-referrer' },
  };
}
