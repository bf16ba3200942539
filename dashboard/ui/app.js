// breakwater dashboard: reads the admin API once, then follows /events.
// Breaker state is pushed (an event re-reads /breakers); gauges such as
// quota tokens and bulkhead slots are re-read with the /metrics sample
// every SAMPLE_MS. Everything is built with DOM calls, never by parsing
// HTML strings: names come from the config file and are shown as text.
'use strict';
(() => {
  const SAMPLE_MS = 5000;          // /metrics (and /routes, /health) re-read interval
  const WINDOW_MS = 60000;         // sparklines cover the last minute
  const CONFIRM_MS = 8000;         // an unconfirmed action is forgotten after this
  const MAX_TRANSITIONS = 5;       // per breaker
  const MAX_EVENTS = 50;
  const TOKEN_KEY = 'breakwater.admin.token';
  const SVG = 'http://www.w3.org/2000/svg';
  const EVENT_TYPES = ['breaker', 'reload', 'quota_exhausted', 'quota_paused', 'budget_exhausted', 'token',
    'upstream_health', 'upstream_mode', 'dropped'];

  const S = {
    ui: { actions: false, token_required: false },
    config: null,
    breakers: new Map(),    // "scope:name" -> status with .until (epoch ms of half-open)
    health: null,
    healthAt: 0,
    routes: [],
    tiers: [],
    upQueues: new Map(),    // upstream name -> its queues from /routes (concurrency, quota_waiting)
    transitions: new Map(), // breaker name -> [{from, to, time}], newest first
    samples: [],            // [{t, req: Map(route -> {n, err}), cache: Map(route -> {hit, miss, stale})}]
    events: [],             // newest first
    pending: null,          // {key, expires}: an action waiting for its confirmation
    busy: null,             // key of the action in flight
  };

  const $ = (id) => document.getElementById(id);

  // el builds an element: attrs are attributes, except text (textContent)
  // and on* (listeners); null/false attributes are left out.
  function el(tag, attrs, ...kids) {
    const svg = tag.startsWith('svg:');
    const e = svg ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const k of kids.flat()) {
      if (k != null && k !== false) e.append(k instanceof Node ? k : String(k));
    }
    return e;
  }

  // ---- formatting ----

  const STATE_LABEL = { closed: 'CLOSED', open: 'OPEN', 'half-open': 'HALF-OPEN', 'half-open due': 'HALF-OPEN DUE' };
  const stateLabel = (s) => STATE_LABEL[s] || String(s || 'UNKNOWN').toUpperCase();
  const pct = (x) => (x == null || !isFinite(x)) ? '–' : (Math.round(x * 1000) / 10) + '%';
  const clock = (t) => { const d = new Date(t); return isNaN(d) ? '' : d.toLocaleTimeString([], { hour12: false }); };

  function secs(s) {
    s = Math.max(0, Math.ceil(s));
    if (s < 60) return s + 's';
    const m = Math.floor(s / 60);
    if (m < 60) return m + 'm ' + String(s % 60).padStart(2, '0') + 's';
    return Math.floor(m / 60) + 'h ' + String(m % 60).padStart(2, '0') + 'm';
  }

  function bytes(n) {
    if (!(n > 0)) return '0 B';
    const u = ['B', 'KiB', 'MiB', 'GiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : n) + ' ' + u[i];
  }

  function rate(x) {
    if (x == null) return '–';
    return (x >= 10 ? x.toFixed(0) : x >= 1 ? x.toFixed(1) : x.toFixed(2)) + '/s';
  }

  function notice(text, kind) {
    const n = $('notice');
    n.textContent = text;
    n.dataset.kind = kind || 'info';
  }

  function setConn(state) {
    const c = $('conn');
    c.dataset.conn = state;
    c.textContent = { live: 'LIVE', connecting: 'CONNECTING…', reconnecting: 'RECONNECTING…' }[state];
  }

  // ---- reading the admin API ----

  async function getJSON(path) {
    const r = await fetch(path, { cache: 'no-store', headers: { Accept: 'application/json' } });
    // /health answers 503 with a full body when every upstream is down.
    const body = await r.json().catch(() => null);
    if (body == null) throw new Error(path + ': HTTP ' + r.status);
    return body;
  }

  function setBreakers(list) {
    const now = Date.now();
    S.breakers = new Map();
    for (const b of list || []) {
      b.until = (b.state === 'open' && b.retry_in_seconds > 0) ? now + b.retry_in_seconds * 1000 : null;
      S.breakers.set(b.scope + ':' + b.name, b);
    }
  }

  const loaders = {
    ui: async () => { S.ui = await getJSON('/ui/state.json'); },
    config: async () => { S.config = await getJSON('/config'); },
    breakers: async () => { setBreakers((await getJSON('/breakers')).breakers); },
    health: async () => { S.health = await getJSON('/health'); S.healthAt = Date.now(); },
    routes: async () => {
      const r = await getJSON('/routes');
      S.routes = r.routes || []; S.tiers = r.tiers || [];
      S.upQueues = new Map((r.upstreams || []).map((u) => [u.name, u]));
    },
    metrics: sample,
  };

  async function load(names) {
    const results = await Promise.allSettled(names.map((n) => loaders[n]()));
    const failed = results.filter((r) => r.status === 'rejected');
    if (failed.length) notice('Could not read the admin API: ' + failed[0].reason.message, 'error');
    render();
  }

  const refreshAll = () => load(['ui', 'config', 'breakers', 'health', 'routes', 'metrics']);

  // refresh coalesces the re-reads asked for by a burst of events.
  let queued = new Set();
  let queueTimer = 0;
  function refresh(...names) {
    names.forEach((n) => queued.add(n));
    if (queueTimer) return;
    queueTimer = setTimeout(() => {
      const names = [...queued];
      queued = new Set();
      queueTimer = 0;
      load(names);
    }, 150);
  }

  // ---- /metrics: Prometheus text, the two counters the page samples ----

  const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  const unescape = (v) => v.replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));

  function parseMetrics(text) {
    const req = new Map();
    const cache = new Map();
    const tools = new Map(); // route -> Map(tool -> {n, err})
    for (const line of text.split('\n')) {
      let name;
      if (line.startsWith('breakwater_requests_total{')) name = 'req';
      else if (line.startsWith('breakwater_cache_lookups_total{')) name = 'cache';
      else continue;
      const close = line.lastIndexOf('}');
      const value = parseFloat(line.slice(close + 1).trim().split(/\s+/)[0]);
      const labels = {};
      for (const m of line.slice(line.indexOf('{') + 1, close).matchAll(LABEL)) labels[m[1]] = unescape(m[2]);
      if (!isFinite(value) || !labels.route) continue;
      if (name === 'req') {
        const r = req.get(labels.route) || { n: 0, err: 0 };
        r.n += value;
        if (Number(labels.code) >= 500) r.err += value;
        req.set(labels.route, r);
        if (labels.tool) {
          const byTool = tools.get(labels.route) || new Map();
          const t = byTool.get(labels.tool) || { n: 0, err: 0 };
          t.n += value;
          if (Number(labels.code) >= 500) t.err += value;
          tools.set(labels.route, byTool.set(labels.tool, t));
        }
      } else {
        const c = cache.get(labels.route) || { hit: 0, miss: 0, stale: 0 };
        if (labels.result in c) c[labels.result] += value;
        cache.set(labels.route, c);
      }
    }
    return { req, cache, tools };
  }

  async function sample() {
    const r = await fetch('/metrics', { cache: 'no-store' });
    if (!r.ok) throw new Error('/metrics: HTTP ' + r.status);
    const m = parseMetrics(await r.text());
    const t = Date.now();
    // Re-reads after an action come at any moment: one closer than 2s to
    // the sample before replaces the last, so that intervals stay
    // comparable.
    const n = S.samples.length;
    if (n >= 2 && t - S.samples[n - 2].t < 2000) S.samples.pop();
    S.samples.push({ t, req: m.req, cache: m.cache, tools: m.tools });
    while (S.samples.length > 2 && t - S.samples[1].t > WINDOW_MS) S.samples.shift();
  }

  // series turns the route's counter samples into per-interval request
  // rates and 5xx shares, each point {t: end of the interval, v}. A
  // counter that went down (a restart) starts over.
  function series(route) {
    const rps = [];
    const err = [];
    for (let i = 1; i < S.samples.length; i++) {
      const a = S.samples[i - 1];
      const b = S.samples[i];
      const x = a.req.get(route) || { n: 0, err: 0 };
      const y = b.req.get(route) || { n: 0, err: 0 };
      let dn = y.n - x.n;
      let de = y.err - x.err;
      if (dn < 0 || de < 0) { dn = y.n; de = y.err; }
      rps.push({ t: b.t, v: dn / Math.max((b.t - a.t) / 1000, 0.001) });
      err.push({ t: b.t, v: dn > 0 ? de / dn : 0 });
    }
    return { rps, err };
  }

  // ---- operator actions ----

  function token() {
    return ($('token').value || '').trim();
  }

  async function post(path) {
    const headers = { Accept: 'application/json' };
    if (token()) headers.Authorization = 'Bearer ' + token();
    const r = await fetch(path, { method: 'POST', headers, cache: 'no-store' });
    const body = await r.json().catch(() => null);
    if (r.status === 401) {
      $('token').focus();
      throw new Error('The admin token was refused: enter it in "Admin token" and try again.');
    }
    if (!r.ok) {
      const why = body && (body.error || (body.errors || []).join('; '));
      throw new Error(why || 'HTTP ' + r.status);
    }
    return body;
  }

  async function act(key, run) {
    S.pending = null;
    S.busy = key;
    render();
    try {
      notice(await run(), 'ok');
    } catch (e) {
      notice(e.message, 'error');
    } finally {
      S.busy = null;
      refresh('breakers', 'health', 'routes', 'metrics');
      render();
    }
  }

  // confirmable is an action in two clicks: the button, then Confirm
  // (or Cancel). window.confirm is avoided: it blocks the event stream
  // and is awkward headless.
  function confirmable(key, label, aria, confirmLabel, run) {
    if (S.pending && S.pending.key === key) {
      return [
        el('button', { class: 'confirm', 'data-key': key + ':confirm', 'aria-label': 'Confirm: ' + aria,
          onclick: () => act(key, run) }, confirmLabel),
        el('button', { 'data-key': key + ':cancel', 'aria-label': 'Cancel: ' + aria,
          onclick: () => { S.pending = null; render(key); } }, 'Cancel'),
      ];
    }
    return el('button', { 'data-key': key, 'aria-label': aria, disabled: S.busy === key,
      onclick: () => { S.pending = { key, expires: Date.now() + CONFIRM_MS }; render(key + ':confirm'); } },
    S.busy === key ? 'Working…' : label);
  }

  function forceBreaker(name, state) {
    const verb = state === 'open' ? 'open' : 'close';
    return confirmable('breaker:' + name + ':' + state,
      verb === 'open' ? 'Open breaker' : 'Close breaker',
      'Force breaker ' + name + ' ' + state,
      'Confirm ' + verb,
      async () => {
        const b = await post('/breakers/' + encodeURIComponent(name) + '?state=' + encodeURIComponent(state));
        return 'Breaker ' + name + ' forced ' + stateLabel(b.state) + '.';
      });
  }

  function purgeCache(route) {
    return confirmable('purge:' + route, 'Purge cache', 'Purge the cache of route ' + route, 'Confirm purge',
      async () => {
        const b = await post('/cache/purge?route=' + encodeURIComponent(route));
        return 'Cache purged: ' + ((b.purged || []).join(', ') || 'nothing to purge') + '.';
      });
  }

  // setMode puts an upstream in cache_only mode (its routes answer from
  // cache and fallback only) or back to normal.
  function setMode(name, mode) {
    const on = mode === 'cache_only';
    return confirmable('mode:' + name + ':' + mode,
      on ? 'Cache only' : 'Back to normal',
      on ? 'Serve upstream ' + name + ' from cache only' : 'Send upstream ' + name + ' traffic again',
      on ? 'Confirm cache only' : 'Confirm normal',
      async () => {
        const b = await post('/upstreams/' + encodeURIComponent(name) + '?mode=' + encodeURIComponent(mode));
        return 'Upstream ' + name + ' is in ' + b.mode + ' mode.';
      });
  }

  function reloadConfig() {
    return confirmable('reload', 'Reload config', 'Reload the config file', 'Confirm reload', async () => {
      const b = await post('/reload');
      refresh('ui', 'config');
      return 'Config reloaded: ' + (b.config_hash || '') + '.';
    });
  }

  // ---- rendering ----

  function badge(state, label, cls) {
    return el('span', { class: 'badge ' + (cls || ''), 'data-state': state }, label);
  }

  function countdown(until, prefix) {
    if (!until) return null;
    return el('span', { class: 'countdown', 'data-until': until, 'data-prefix': prefix },
      prefix + secs((until - Date.now()) / 1000));
  }

  // shownState is the state as of now: an open breaker whose delay has
  // run out lets the next request probe, which failsafe reports lazily.
  function shownState(b) {
    if (b.state === 'open' && b.until && b.until <= Date.now()) return 'half-open due';
    return b.state;
  }

  function breakerBlock(b) {
    const st = shownState(b);
    const trans = S.transitions.get(b.name) || [];
    return el('div', { class: 'breaker', 'data-breaker': b.name, 'data-scope': b.scope, 'data-state': st },
      el('div', { class: 'breaker-head' },
        el('span', {}, 'Breaker ', el('code', {}, b.name), ' (' + b.scope + ')'),
        badge(st, stateLabel(st), 'state'),
        st === 'open' ? countdown(b.until, 'half-open in ') : null),
      el('dl', { class: 'kv' },
        el('dt', {}, 'Failure rate'), el('dd', { class: 'num' }, pct(b.failure_rate)),
        el('dt', {}, 'Failures / successes'), el('dd', { class: 'num' }, b.failures + ' / ' + b.successes)),
      trans.length ? el('ol', { class: 'transitions', 'aria-label': 'Recent transitions of ' + b.name },
        trans.map((t) => el('li', {}, el('time', { datetime: t.time }, clock(t.time)), ' ',
          stateLabel(t.from) + ' → ' + stateLabel(t.to)))) : null,
      S.ui.actions ? el('div', { class: 'actions' }, forceBreaker(b.name, 'open'), forceBreaker(b.name, 'closed')) : null);
  }

  // sparkline draws points {t, v} over the last WINDOW_MS, the newest
  // sample at the right edge.
  function sparkline(points, max, cls, label) {
    const W = 120;
    const H = 30;
    const svg = el('svg:svg', { viewBox: '0 0 ' + W + ' ' + H, preserveAspectRatio: 'none', role: 'img', 'aria-label': label },
      el('svg:line', { class: 'base', x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5 }));
    if (!points.length) return svg;
    const end = points[points.length - 1].t;
    const xy = (p) => {
      const x = Math.max(0, W - ((end - p.t) / WINDOW_MS) * W);
      const y = H - 1 - (max > 0 ? Math.min(p.v / max, 1) : 0) * (H - 2);
      return x.toFixed(1) + ',' + y.toFixed(1);
    };
    // One interval: a flat segment as wide as the interval.
    if (points.length === 1) points = [{ t: end - SAMPLE_MS, v: points[0].v }, points[0]];
    const pts = points.map(xy);
    const first = pts[0].split(',')[0];
    svg.append(el('svg:polygon', { class: 'area ' + cls, points: first + ',' + H + ' ' + pts.join(' ') + ' ' + W + ',' + H }));
    svg.append(el('svg:polyline', { class: 'line ' + cls, points: pts.join(' ') }));
    return svg;
  }

  function traffic(route) {
    const { rps, err } = series(route);
    const last = (a) => (a.length ? a[a.length - 1].v : null);
    const peak = Math.max(1, ...rps.map((p) => p.v));
    return el('div', { class: 'traffic' },
      el('h4', {}, 'Traffic, last minute'),
      el('div', { class: 'spark' },
        sparkline(rps, peak, '', 'Requests per second of ' + route + ' over the last minute, now ' + rate(last(rps))),
        el('span', { class: 'num' }, rate(last(rps))),
        sparkline(err, 1, 'err', 'Share of 5xx answers of ' + route + ' over the last minute, now ' + pct(last(err))),
        el('span', { class: 'num' }, pct(last(err)) + ' 5xx')));
  }

  // toolsBlock lists an MCP route's tools: calls since start and the
  // 5xx share over the last interval, busiest first.
  function toolsBlock(route) {
    const n = S.samples.length;
    const now = n ? S.samples[n - 1].tools.get(route) : null;
    if (!now || !now.size) return null;
    const before = n > 1 ? S.samples[n - 2].tools.get(route) : null;
    const rows = [...now.entries()].sort((a, b) => b[1].n - a[1].n).slice(0, 10).flatMap(([tool, c]) => {
      const p = (before && before.get(tool)) || { n: 0, err: 0 };
      const dn = c.n - p.n;
      return [el('dt', {}, el('code', {}, tool)),
        el('dd', { class: 'num' }, c.n + (c.n === 1 ? ' call' : ' calls') + (dn > 0 ? ', ' + pct((c.err - p.err) / dn) + ' 5xx now' : ''))];
    });
    return el('div', { class: 'tools' }, el('h4', {}, 'MCP tools'), el('dl', { class: 'kv', 'data-field': 'tools' }, rows));
  }

  function cacheBlock(rs) {
    const s = rs.cache;
    const entries = s.entries ?? s.Entries;
    const size = s.bytes ?? s.Bytes;
    const latest = S.samples.length ? S.samples[S.samples.length - 1].cache.get(rs.name) : null;
    const c = latest || { hit: 0, miss: 0, stale: 0 };
    const total = c.hit + c.miss + c.stale;
    const share = (x) => (total ? pct(x / total) : '–');
    return el('div', { class: 'cache' },
      el('h4', {}, 'Cache'),
      el('dl', { class: 'kv' },
        el('dt', {}, 'Entries'), el('dd', { class: 'num', 'data-field': 'entries' }, String(entries)),
        el('dt', {}, 'Size'), el('dd', { class: 'num' }, bytes(size)),
        el('dt', {}, 'Hit / miss / stale'),
        el('dd', { class: 'num', 'data-field': 'lookups' }, share(c.hit) + ' / ' + share(c.miss) + ' / ' + share(c.stale) + ' of ' + total)),
      S.ui.actions ? el('div', { class: 'actions' }, purgeCache(rs.name)) : null);
  }

  function configRoute(name) {
    return ((S.config && S.config.routes) || []).find((r) => r.name === name) || null;
  }

  // tierCard is one client tier's usage: its windows with the refusals
  // each one made, clients in flight against max_concurrent.
  function tierCard(t) {
    const by = t.rejected_by_window || [];
    return el('article', { class: 'card', 'data-tier': t.name, 'aria-label': 'Tier ' + t.name },
      el('header', {}, el('h3', {}, t.name)),
      el('p', { class: 'sub' }, 'Priority ' + t.priority + ', ' + t.clients + ' client' + (t.clients === 1 ? '' : 's')),
      el('dl', { class: 'kv' },
        t.rate_limits.flatMap((w, i) => [el('dt', {}, 'Window ' + w), el('dd', { class: 'num' }, String(by[i] || 0) + ' refused')]),
        el('dt', {}, 'Rejected (429)'), el('dd', { class: 'num' }, String(t.rejected)),
        el('dt', {}, 'In flight'), el('dd', { class: 'num' }, t.in_flight + (t.max_concurrent ? ' / ' + t.max_concurrent : '')),
        el('dt', {}, 'Clients tracked'), el('dd', { class: 'num' }, String(t.rate_limit_keys))));
  }

  function routeCard(rs) {
    const cr = configRoute(rs.name);
    const eff = (cr && cr.effective) || {};
    const m = (cr && cr.match) || {};
    const where = m.path || (m.path_prefix ? m.path_prefix + '*' : '');
    let breaker = null;
    if (rs.breaker) {
      const own = S.breakers.get('route:' + rs.breaker);
      const shared = S.breakers.get('upstream:' + rs.breaker);
      if (own && !eff.shared_breaker) breaker = breakerBlock(own);
      else if (shared) {
        const st = shownState(shared);
        breaker = el('p', { class: 'sub' }, 'Breaker: shared with upstream ', el('code', {}, rs.upstream), ' ',
          badge(st, stateLabel(st)));
      }
    }
    const bulk = rs.bulkhead_max > 0 ? el('div', {},
      el('h4', {}, 'Bulkhead'),
      el('meter', { min: 0, max: rs.bulkhead_max, value: rs.bulkhead_in_flight, high: rs.bulkhead_max * 0.8, optimum: 0,
        'aria-label': 'Bulkhead of route ' + rs.name + ': ' + rs.bulkhead_in_flight + ' of ' + rs.bulkhead_max + ' in flight' }),
      el('p', { class: 'sub num' }, rs.bulkhead_in_flight + ' / ' + rs.bulkhead_max + ' in flight' +
        (rs.bulkhead_waiting > 0 ? ', ' + rs.bulkhead_waiting + ' waiting' : ''))) : null;
    const limited = (eff.rate_limit || rs.rate_limited > 0) ? el('div', {},
      el('h4', {}, 'Rate limit'),
      el('dl', { class: 'kv' },
        el('dt', {}, 'Rejected (429)'), el('dd', { class: 'num' }, String(rs.rate_limited)),
        el('dt', {}, 'Clients tracked'), el('dd', { class: 'num' }, String(rs.rate_limit_keys)),
        eff.rate_limit ? [el('dt', {}, 'Limit'), el('dd', { class: 'num' }, eff.rate_limit.rate + ' burst ' + eff.rate_limit.burst)] : null)) : null;
    return el('article', { class: 'card', 'data-route': rs.name, 'aria-label': 'Route ' + rs.name },
      el('header', {}, el('h3', {}, rs.name)),
      el('p', { class: 'sub' }, (where ? where + ' ' : '') + '→ ', el('code', {}, rs.upstream)),
      breaker, traffic(rs.name), toolsBlock(rs.name), bulk, limited, rs.cache ? cacheBlock(rs) : null);
  }

  function upstreamCard(u) {
    const cu = (S.config && S.config.upstreams && S.config.upstreams[u.name]) || {};
    const own = S.breakers.get('upstream:' + u.name);
    let quota = null;
    if (u.quota) {
      const q = u.quota;
      const until = q.paused_for_seconds > 0 ? S.healthAt + q.paused_for_seconds * 1000 : null;
      quota = el('div', { class: 'quota' },
        el('h4', {}, 'Quota'),
        until ? el('p', { class: 'sub' }, badge('paused', 'PAUSED'), ' by Retry-After ', countdown(until, 'for ')) : null,
        el('dl', { class: 'kv' },
          el('dt', {}, 'Tokens'), el('dd', { class: 'num' }, q.tokens.toFixed(1) + ' / ' + q.burst),
          el('dt', {}, 'Rate'), el('dd', { class: 'num' }, q.rate),
          el('dt', {}, 'Exhausted'), el('dd', { class: 'num' }, String(q.exhausted)),
          el('dt', {}, 'Waiting'), el('dd', { class: 'num' }, String(q.waiting || 0))));
    }
    // The upstream's one set of slots for all its routes (concurrency), from /routes.
    const uq = S.upQueues && S.upQueues.get(u.name);
    const c = uq && uq.concurrency;
    const conc = c ? el('div', { class: 'concurrency' },
      el('h4', {}, 'Concurrency'),
      el('meter', { min: 0, max: c.max, value: c.in_flight, high: c.max * 0.8, optimum: 0,
        'aria-label': 'Concurrency of upstream ' + u.name + ': ' + c.in_flight + ' of ' + c.max + ' in flight, ' + c.waiting + ' waiting' }),
      el('p', { class: 'sub num' }, c.in_flight + ' / ' + c.max + ' in flight, ' + c.waiting + ' waiting')) : null;
    let token = null;
    if (u.token) {
      // The time left on the upstream's OAuth2 token (never the token).
      const t = u.token;
      const until = t.expires_in_seconds != null ? S.healthAt + t.expires_in_seconds * 1000 : null;
      token = el('div', { class: 'token' },
        el('h4', {}, 'Token'),
        el('p', { class: 'sub' }, t.valid ? badge('closed', 'VALID') : badge('open', 'NONE'),
          until ? ' ' : null, until ? countdown(until, 'expires in ') : null),
        t.last_error ? el('p', { class: 'sub' }, t.last_error) : null);
    }
    let check = null;
    if (u.health_check) {
      // The active health check: its verdict, last result and latency.
      const h = u.health_check;
      const st = h.status === 'unhealthy' ? 'open' : h.status === 'healthy' ? 'closed' : 'half-open';
      check = el('div', { class: 'check' },
        el('h4', {}, 'Health check'),
        el('p', { class: 'sub' }, badge(st, String(h.status).toUpperCase()),
          h.result ? ' ' + h.result + ' in ' + (h.latency_ms || 0).toFixed(1) + ' ms' : ' waiting for the first check',
          h.last_change ? ', since ' + new Date(h.last_change).toLocaleTimeString() : ''));
    }
    const cacheOnly = u.mode === 'cache_only';
    const mode = el('div', { class: 'mode', 'data-mode': u.mode || 'normal' },
      el('p', { class: 'sub' }, 'Mode: ', cacheOnly ? badge('open', 'CACHE ONLY') : badge('closed', 'NORMAL'),
        cacheOnly ? ' answers from cache and fallback only' : null),
      S.ui.actions ? el('div', { class: 'actions' }, setMode(u.name, cacheOnly ? 'normal' : 'cache_only')) : null);
    const routes = S.routes.filter((r) => r.upstream === u.name).map((r) => r.name);
    return el('article', { class: 'card', 'data-upstream': u.name, 'aria-label': 'Upstream ' + u.name },
      el('header', {}, el('h3', {}, u.name), badge(u.status, String(u.status).toUpperCase(), 'health')),
      cu.url ? el('p', { class: 'sub' }, el('code', {}, cu.url)) : null,
      routes.length ? el('p', { class: 'sub' }, 'Routes: ' + routes.join(', ')) : null,
      mode, check, conc, quota, token, own ? breakerBlock(own) : null);
  }

  function describe(ev) {
    const d = ev.data || {};
    switch (ev.type) {
      case 'breaker': return d.breaker + ': ' + stateLabel(d.from) + ' → ' + stateLabel(d.to);
      case 'reload': return (d.ok ? 'OK' : 'FAILED') + ' (' + d.reason + ')' + (d.config_hash ? ' ' + d.config_hash : '') +
        (d.errors && d.errors.length ? ': ' + d.errors.join('; ') : '');
      case 'quota_exhausted': return d.upstream + ' quota exhausted on route ' + d.route + ', retry in ' + secs(d.retry_after_seconds || 0);
      case 'quota_paused': return d.upstream + ' paused by Retry-After for ' + secs(d.pause_seconds || 0);
      case 'budget_exhausted': return 'retry budget exhausted on route ' + d.route;
      case 'token': return d.upstream + ' token ' + d.reason + ': ' + (d.ok ? 'OK' + (d.expires_in_seconds ? ', expires in ' + secs(d.expires_in_seconds) : '') : 'FAILED, ' + d.error);
      case 'upstream_health': return d.upstream + ' health check: ' + d.from + ' → ' + d.to + ' (' + d.result + ')';
      case 'upstream_mode': return d.upstream + ' mode: ' + d.mode;
      case 'dropped': return 'missed ' + d.missed + ' events: state re-read';
      default: return JSON.stringify(d);
    }
  }

  // patch makes parent's children look like kids, changing the nodes in
  // place where it can: what did not change keeps its node, its focus and
  // its place under the reader's cursor. An element is reused only for an
  // element of the same tag and the same data-key, because listeners are
  // not copied: buttons with one data-key do one thing.
  function patch(parent, kids) {
    const next = document.createElement(parent.tagName);
    next.append(...kids.flat().filter((k) => k != null && k !== false));
    morphChildren(parent, next);
  }

  function morphChildren(parent, next) {
    const olds = [...parent.childNodes];
    const news = [...next.childNodes];
    news.forEach((n, i) => {
      if (i < olds.length) morph(olds[i], n);
      else parent.append(n);
    });
    olds.slice(news.length).forEach((o) => o.remove());
  }

  function morph(old, n) {
    if (old.isEqualNode(n)) return;
    if (old.nodeType === Node.TEXT_NODE && n.nodeType === Node.TEXT_NODE) {
      old.nodeValue = n.nodeValue;
      return;
    }
    if (old.nodeType !== Node.ELEMENT_NODE || old.nodeName !== n.nodeName ||
        old.getAttribute('data-key') !== n.getAttribute('data-key')) {
      old.replaceWith(n);
      return;
    }
    for (const a of [...old.attributes]) {
      if (!n.hasAttribute(a.name)) old.removeAttribute(a.name);
    }
    for (const a of n.attributes) {
      if (old.getAttribute(a.name) !== a.value) old.setAttribute(a.name, a.value);
    }
    morphChildren(old, n);
  }

  function renderHeader() {
    const h = S.health || {};
    $('config-hash').textContent = h.config_hash || (S.config && S.config.hash) || '–';
    const lr = h.last_reload;
    const errs = lr && !lr.ok && lr.errors && lr.errors.length ? lr.errors : [];
    patch($('last-reload'), lr ? [badge(lr.ok ? 'ok' : 'failed', lr.ok ? 'OK' : 'FAILED'), ' ',
      el('time', { datetime: lr.time }, clock(lr.time)), ' (' + lr.reason + ')' + (lr.ok ? '' : ', old config kept')] : ['–']);
    patch($('reload-errors'), errs.map((e) => el('li', {}, e)));
    $('reload-errors').hidden = !errs.length;
    $('ops').hidden = !S.ui.actions;
    $('readonly').hidden = S.ui.actions;
    $('token-box').hidden = !(S.ui.actions && S.ui.token_required);
    patch($('reload-box'), S.ui.actions ? [reloadConfig()] : []);
  }

  // render shows S. Focus survives: an element that was kept keeps it; a
  // replaced one hands it to the element with the same data-key (or the
  // one named by focusKey).
  function render(focusKey) {
    const active = document.activeElement;
    const keep = focusKey || (active && active.dataset && active.dataset.key);
    renderHeader();

    const ups = (S.health && S.health.upstreams) || [];
    patch($('upstreams'), ups.length ? ups.map(upstreamCard) : [el('p', { class: 'empty' }, 'No upstreams.')]);
    patch($('routes'), S.routes.length ? S.routes.map(routeCard) : [el('p', { class: 'empty' }, 'No routes.')]);
    $('tiers-section').hidden = !S.tiers.length;
    patch($('tiers'), S.tiers.map(tierCard));
    patch($('events'), S.events.length ? S.events.map((ev) => el('li', { 'data-type': ev.type },
      el('time', { datetime: ev.time }, clock(ev.time)), el('span', { class: 'type' }, ev.type), el('span', {}, describe(ev))))
      : [el('li', { class: 'empty' }, 'No events since this page was opened.')]);

    if (focusKey || (keep && document.activeElement !== active)) {
      // A confirmation that went away hands focus back to its button.
      const target = document.querySelector('[data-key="' + CSS.escape(keep) + '"]') ||
        document.querySelector('[data-key="' + CSS.escape(keep.replace(/:(confirm|cancel)$/, '')) + '"]');
      if (target) target.focus();
    }
  }

  // tick runs every second: countdowns, and forgetting stale confirmations.
  function tick() {
    const now = Date.now();
    let again = false;
    for (const c of document.querySelectorAll('[data-until]')) {
      const left = (Number(c.dataset.until) - now) / 1000;
      c.textContent = c.dataset.prefix + secs(left);
      if (left <= 0) again = true;
    }
    if (S.pending && S.pending.expires <= now) { S.pending = null; again = true; }
    if (again) {
      // A pause that ended or a breaker now due for a probe: show the new state.
      if (S.health) {
        for (const u of S.health.upstreams || []) {
          if (u.quota && S.healthAt + u.quota.paused_for_seconds * 1000 <= now) u.quota.paused_for_seconds = 0;
        }
      }
      render();
    }
  }

  // ---- the event stream ----

  function onEvent(msg) {
    let ev;
    try { ev = JSON.parse(msg.data); } catch { return; }
    ev.time = ev.time || new Date().toISOString();
    S.events.unshift(ev);
    S.events.length = Math.min(S.events.length, MAX_EVENTS);
    const d = ev.data || {};
    switch (ev.type) {
      case 'breaker': {
        const list = S.transitions.get(d.breaker) || [];
        list.unshift({ from: d.from, to: d.to, time: ev.time });
        list.length = Math.min(list.length, MAX_TRANSITIONS);
        S.transitions.set(d.breaker, list);
        for (const b of S.breakers.values()) {
          if (b.name === d.breaker) { b.state = d.to; b.until = null; }
        }
        refresh('breakers', 'health', 'routes');
        break;
      }
      case 'reload':
        if (S.health) {
          S.health.last_reload = { ok: d.ok, reason: d.reason, time: ev.time, config_hash: d.config_hash, errors: d.errors };
        }
        refresh('ui', 'config', 'breakers', 'health', 'routes');
        break;
      case 'quota_exhausted':
      case 'quota_paused':
      case 'token':
      case 'upstream_health':
      case 'upstream_mode':
        refresh('health');
        break;
      case 'dropped':
        refresh('ui', 'config', 'breakers', 'health', 'routes');
        break;
    }
    render();
  }

  let stream = null;
  function connect() {
    setConn(stream ? 'reconnecting' : 'connecting');
    const es = new EventSource('/events');
    stream = es;
    // Every (re)connection re-reads the whole state: events sent while
    // the stream was down are gone.
    es.addEventListener('open', () => { setConn('live'); refreshAll(); });
    es.addEventListener('error', () => {
      setConn('reconnecting');
      // EventSource retries by itself after a network error, but gives up
      // on an HTTP error; then start again.
      if (es.readyState === EventSource.CLOSED && stream === es) setTimeout(connect, 2000);
    });
    for (const t of EVENT_TYPES) es.addEventListener(t, onEvent);
    es.addEventListener('message', onEvent);
  }

  function start() {
    const tok = $('token');
    tok.value = sessionStorage.getItem(TOKEN_KEY) || '';
    tok.addEventListener('input', () => sessionStorage.setItem(TOKEN_KEY, tok.value));
    connect();
    // Should the stream be slow to open, show the state meanwhile.
    setTimeout(() => { if (!S.health) refreshAll(); }, 1500);
    setInterval(() => {
      if (!document.hidden) load(['metrics', 'routes', 'health']);
    }, SAMPLE_MS);
    setInterval(tick, 1000);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
