// The operator console: plain DOM, no framework, no build step. Every call
// goes to the daemon's own API with the token entered once (kept in this
// tab's sessionStorage); API errors are shown as their problem title and
// detail. Text from the API is only ever set with textContent.
'use strict';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'eventlogs.token';
const PAGE = 20;
const FEED_ROWS = 200;

// ---- calls -------------------------------------------------------------

/** An API error: the problem document (or what stands in for one). */
class ApiProblem extends Error {
  constructor(problem) {
    super(problem.title || 'Error');
    this.problem = problem;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || '';
}

function authHeaders() {
  return token() ? { Authorization: 'Bearer ' + token() } : {};
}

/** Calls the API; resolves to { response, body } or throws ApiProblem. */
async function api(method, path, options = {}) {
  const headers = authHeaders();
  let body;
  if (options.bytes !== undefined) {
    headers['Content-Type'] = options.contentType;
    body = options.bytes;
  } else if (options.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(options.json);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body });
  } catch (error) {
    throw new ApiProblem({ title: 'The daemon is unreachable', detail: String(error), status: 0 });
  }
  const text = await response.text();
  const type = response.headers.get('content-type') || '';
  const parsed = type.includes('json') && text ? JSON.parse(text) : text;
  if (!response.ok) {
    const problem = typeof parsed === 'object' && parsed
      ? parsed
      : { title: response.statusText || 'Error', detail: text };
    problem.status = response.status;
    throw new ApiProblem(problem);
  }
  return { response, body: parsed };
}

/** Runs an action; shows its failure as a problem instead of throwing. */
async function guard(action) {
  try {
    hideProblem();
    return await action();
  } catch (error) {
    showProblem(error instanceof ApiProblem
      ? error.problem
      : { title: 'Unexpected error in the console', detail: String(error) });
    return undefined;
  }
}

function showProblem(problem) {
  $('problem-title').textContent = problem.title || 'Error';
  $('problem-status').textContent = problem.status ? ` (HTTP ${problem.status})` : '';
  $('problem-detail').textContent = problem.detail || '';
  $('problem-type').textContent = problem.type || '';
  $('problem').hidden = false;
  $('problem-dismiss').focus();
}

function hideProblem() {
  $('problem').hidden = true;
}

// ---- small DOM helpers -------------------------------------------------

/** An element with text (never HTML) and attributes. */
function el(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}

function row(cells) {
  const tr = el('tr');
  for (const cell of cells) {
    const td = el('td');
    td.append(cell instanceof Node ? cell : document.createTextNode(String(cell)));
    tr.append(td);
  }
  return tr;
}

function facts(dl, pairs) {
  dl.replaceChildren();
  for (const [name, value] of pairs) dl.append(el('dt', name), el('dd', value));
}

function time(micros) {
  return new Date(Number(micros) / 1000).toISOString();
}

function short(version) {
  return version.slice(0, 12);
}

function pretty(value) {
  return JSON.stringify(value, null, 2);
}

// ---- token -------------------------------------------------------------

function showTokenState() {
  $('token-state').textContent = token() ? 'token set for this tab' : 'no token';
}

$('token-form').addEventListener('submit', (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $('token').value.trim());
  $('token').value = '';
  showTokenState();
  route();
});

$('token-forget').addEventListener('click', () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showTokenState();
});

$('problem-dismiss').addEventListener('click', hideProblem);

// ---- reducers ----------------------------------------------------------

async function loadReducers() {
  const { body: reducers } = await api('GET', '/v1/reducers');
  const container = $('reducers');
  container.replaceChildren();
  if (reducers.length === 0) container.append(el('p', 'No reducer is deployed yet.'));
  for (const reducer of reducers) container.append(renderReducer(reducer));
}

function renderReducer(reducer) {
  const panel = el('div', null, { class: 'panel', id: `reducer-${reducer.name}` });
  panel.append(el('h3', reducer.name));
  panel.append(el('p', `active: ${short(reducer.active_version)} since ${time(reducer.activated_at_micros)}`));
  const table = el('table');
  table.append(el('caption', `${reducer.versions.length} stored version(s), oldest first`));
  const head = el('tr');
  for (const name of ['version', 'size (bytes)', 'stored at', 'state']) head.append(el('th', name, { scope: 'col' }));
  const thead = el('thead');
  thead.append(head);
  table.append(thead);
  const body = el('tbody');
  for (const version of reducer.versions) {
    let state;
    if (version.version === reducer.active_version) {
      state = el('span', 'active', { class: 'active' });
    } else {
      state = el('button', 'Activate', {
        type: 'button',
        'data-version': version.version,
        'aria-label': `Activate ${reducer.name} version ${short(version.version)}`,
      });
      state.addEventListener('click', () => guard(async () => {
        await api('POST', `/v1/reducers/${encodeURIComponent(reducer.name)}/activate`, {
          json: { version: version.version },
        });
        await loadReducers();
      }));
    }
    body.append(row([el('code', short(version.version), { title: version.version }),
      version.size, time(version.created_at_micros), state]));
  }
  table.append(body);
  const scroll = el('div', null, { class: 'scroll' });
  scroll.append(table);
  panel.append(scroll);
  return panel;
}

$('deploy-form').addEventListener('submit', (event) => {
  event.preventDefault();
  guard(async () => {
    const name = $('deploy-name').value.trim();
    const file = $('deploy-file').files[0];
    if (!file) throw new ApiProblem({ title: 'No file chosen', detail: 'choose a .wasm component to deploy' });
    const query = $('deploy-force').checked ? '?force=true' : '';
    $('deploy-result').textContent = `deploying ${file.name}…`;
    const { body } = await api('PUT', `/v1/reducers/${encodeURIComponent(name)}${query}`, {
      bytes: await file.arrayBuffer(),
      contentType: 'application/wasm',
    });
    $('deploy-result').textContent = `Deployed ${body.name} version ${short(body.version)} `
      + `(${body.size} bytes, ${body.created ? 'new' : 'already stored'}); `
      + `replayed ${body.replayed_logs} existing log(s).`;
    await loadReducers();
    return true;
  }).then((deployed) => {
    if (!deployed) $('deploy-result').textContent = 'Not deployed (see the error above).';
  });
});

// ---- a log -------------------------------------------------------------

const logView = { id: null, reducer: null, next: null };

async function openLog(id) {
  logView.id = id;
  $('log-id').value = id;
  const path = `/v1/logs/${encodeURIComponent(id)}`;
  const { body: metadata } = await api('GET', path);
  logView.reducer = metadata.reducer;
  facts($('log-metadata'), [
    ['log', metadata.log_id],
    ['reducer', metadata.reducer],
    ['created at', time(metadata.created_at_micros)],
    ['last index', metadata.last_index],
  ]);
  $('log').hidden = false;
  await Promise.all([loadAggregate(), loadEvents(`${path}/events?from=0&limit=${PAGE}`), loadVersions()]);
}

async function loadAggregate() {
  const { body } = await api('GET', `/v1/logs/${encodeURIComponent(logView.id)}/aggregate`);
  facts($('log-aggregate-facts'), aggregateFacts(body));
  $('log-aggregate').textContent = pretty(body.aggregate);
}

function aggregateFacts(body) {
  return [
    ['version', short(body.reducer_version)],
    ['through index', body.through_index],
    ['from cache', body.from_cache ? 'yes' : 'no'],
    ['events folded', body.events_folded],
    ['reduced at', time(body.reduced_at_micros)],
  ];
}

async function loadEvents(path) {
  const { response, body } = await api('GET', path);
  const rows = body.map((e) => row([e.index, e.position, time(e.recorded_at_micros), el('code', JSON.stringify(e.event))]));
  $('log-events').tBodies[0].replaceChildren(...rows);
  const link = response.headers.get('link') || '';
  const next = /<([^>]+)>\s*;\s*rel="next"/.exec(link);
  logView.next = next ? next[1] : null;
  $('events-next').disabled = !logView.next;
  $('events-range').textContent = body.length
    ? `events ${body[0].index} to ${body[body.length - 1].index}`
    : 'no events';
}

async function loadVersions() {
  const { body: reducer } = await api('GET', `/v1/reducers/${encodeURIComponent(logView.reducer)}`);
  for (const [select, pick] of [[$('compare-left'), 0], [$('compare-right'), reducer.versions.length - 1]]) {
    select.replaceChildren(...reducer.versions.map((v) => {
      const active = v.version === reducer.active_version ? ' (active)' : '';
      return el('option', `${short(v.version)}${active}`, { value: v.version });
    }));
    select.selectedIndex = Math.max(pick, 0);
  }
  $('compare').replaceChildren();
  $('compare-verdict').textContent = '';
}

$('log-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const id = $('log-id').value.trim();
  if (location.hash === `#/log/${id}`) guard(() => openLog(id));
  else location.hash = `#/log/${id}`;
});

$('events-first').addEventListener('click', () => guard(() =>
  loadEvents(`/v1/logs/${encodeURIComponent(logView.id)}/events?from=0&limit=${PAGE}`)));
$('events-next').addEventListener('click', () => guard(() => loadEvents(logView.next)));

$('compare-form').addEventListener('submit', (event) => {
  event.preventDefault();
  guard(async () => {
    const base = `/v1/logs/${encodeURIComponent(logView.id)}/aggregate?version=`;
    const sides = await Promise.all([$('compare-left').value, $('compare-right').value]
      .map((version) => api('GET', base + encodeURIComponent(version)).then((r) => r.body)));
    const same = JSON.stringify(sides[0].aggregate) === JSON.stringify(sides[1].aggregate);
    $('compare').replaceChildren(...sides.map((side, i) => {
      const panel = el('div', null, { class: 'panel', id: i === 0 ? 'compare-left-result' : 'compare-right-result' });
      panel.append(el('h3', `${i === 0 ? 'Left' : 'Right'}: ${short(side.reducer_version)}`));
      const dl = el('dl', null, { class: 'facts' });
      facts(dl, aggregateFacts(side));
      panel.append(dl, el('pre', pretty(side.aggregate), { tabindex: '0' }));
      return panel;
    }));
    $('compare-verdict').textContent = same ? 'The two aggregates are identical.' : 'The two aggregates differ.';
  });
});

// ---- the live feed -----------------------------------------------------

let feed = null;

async function feedHead() {
  try {
    const { body } = await api('GET', '/metrics');
    const head = metricValues(body, 'eventlogs_feed_head_position');
    return head.length ? Math.max(...head.map((m) => m.value)) : 0;
  } catch {
    return 0;
  }
}

async function startFeed() {
  const controller = new AbortController();
  feed = controller;
  $('feed-toggle').textContent = 'Stop';
  $('feed-state').textContent = 'connecting…';
  const after = await feedHead();
  let response;
  try {
    response = await fetch(`/v1/feed/stream?after=${after}`, {
      headers: { ...authHeaders(), Accept: 'text/event-stream' },
      signal: controller.signal,
    });
  } catch (error) {
    stopFeed(`disconnected: ${error}`);
    return;
  }
  if (!response.ok) {
    const text = await response.text();
    let problem;
    try { problem = JSON.parse(text); } catch { problem = { title: response.statusText, detail: text }; }
    problem.status = response.status;
    stopFeed('stopped');
    showProblem(problem);
    return;
  }
  $('feed-state').textContent = `following, after position ${after}`;
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        feedMessage(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
    stopFeed('the stream ended');
  } catch (error) {
    if (feed === controller) stopFeed(`disconnected: ${error}`);
  }
}

function feedMessage(message) {
  const data = message.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart());
  if (!data.length) return;
  const record = JSON.parse(data.join('\n'));
  const body = $('feed-events').tBodies[0];
  const logLink = el('a', record.log_id, { href: `#/log/${record.log_id}` });
  body.prepend(row([record.position, logLink, record.index, el('code', JSON.stringify(record.event))]));
  while (body.rows.length > FEED_ROWS) body.deleteRow(body.rows.length - 1);
  $('feed-state').textContent = `following; last position ${record.position}`;
}

function stopFeed(state) {
  if (feed) feed.abort();
  feed = null;
  $('feed-toggle').textContent = 'Start';
  $('feed-state').textContent = state;
}

$('feed-toggle').addEventListener('click', () => {
  if (feed) stopFeed('stopped');
  else startFeed();
});

// ---- health ------------------------------------------------------------

/** Samples of one metric in Prometheus text: [{ labels, value }]. */
function metricValues(text, name) {
  const samples = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-z_:]+)(\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!match || match[1] !== name) continue;
    const labels = {};
    for (const pair of (match[3] || '').matchAll(/([a-z_]+)="([^"]*)"/g)) labels[pair[1]] = pair[2];
    samples.push({ labels, value: Number(match[4]) });
  }
  return samples;
}

function total(text, name) {
  return metricValues(text, name).reduce((sum, m) => sum + m.value, 0);
}

async function loadHealth() {
  let ready;
  try {
    const response = await fetch('/readyz');
    ready = response.ok ? 'ready' : `not ready (HTTP ${response.status}): ${await response.text()}`;
  } catch (error) {
    ready = `unreachable: ${error}`;
  }
  const { body: text } = await api('GET', '/metrics');
  const hits = total(text, 'eventlogs_cache_hits_total');
  const misses = total(text, 'eventlogs_cache_misses_total');
  const rate = hits + misses ? `${(100 * hits / (hits + misses)).toFixed(1)}% (${hits} hits, ${misses} misses)` : 'no reads yet';
  facts($('health'), [
    ['readiness', ready],
    ['cache hit rate', rate],
    ['cache errors', total(text, 'eventlogs_cache_errors_total')],
    ['reductions', total(text, 'eventlogs_reductions_total')],
    ['events appended', total(text, 'eventlogs_appended_events_total')],
    ['reducer failures', total(text, 'eventlogs_reducer_failures_total')],
  ]);
  const failures = metricValues(text, 'eventlogs_reducer_failures_total');
  $('health-failures').tBodies[0].replaceChildren(...(failures.length
    ? failures.map((m) => row([m.labels.kind || '-', m.value]))
    : [row(['none', 0])]));
}

$('health-refresh').addEventListener('click', () => guard(loadHealth));

// ---- navigation --------------------------------------------------------

const VIEWS = ['reducers', 'log', 'feed', 'health'];

function route() {
  const [, view = 'reducers', id] = /^#\/([a-z]+)(?:\/(.+))?/.exec(location.hash) || [];
  const shown = VIEWS.includes(view) ? view : 'reducers';
  for (const name of VIEWS) {
    $(`view-${name}`).hidden = name !== shown;
    const link = $(`nav-${name}`);
    if (name === shown) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (shown !== 'feed' && feed) stopFeed('stopped');
  if (shown === 'reducers') guard(loadReducers);
  if (shown === 'log' && id) guard(() => openLog(decodeURIComponent(id)));
  if (shown === 'health') guard(loadHealth);
}

window.addEventListener('hashchange', route);
showTokenState();
route();
