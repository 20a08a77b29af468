// The edge's built-in console: agents, live status and log, run history.
// Plain DOM, no framework, no external asset; everything is text, never HTML,
// so nothing an event carries can run here (and the CSP allows no inline script).
'use strict';

const cards = new Map(); // npc -> [card elements]
let agents = [];

const $ = (sel, root = document) => root.querySelector(sel);

function notice(text) {
  const n = $('#notice');
  n.textContent = text;
  n.hidden = !text;
}

function time(ms) {
  return new Date(ms).toLocaleTimeString();
}

function summary(ev) {
  const d = ev.data;
  if (d && typeof d === 'object') {
    for (const key of ['message', 'result', 'error', 'question']) {
      if (typeof d[key] === 'string') return d[key];
    }
    if (ev.type === 'started' && d.agent) return `run of ${d.agent} started`;
  }
  return d === null || d === undefined ? '' : JSON.stringify(d);
}

const STATUS = { started: 'running', step: 'running', awaiting: 'awaiting', done: 'done', error: 'error' };

function show(ev) {
  for (const card of cards.get(ev.npc) || []) {
    const li = document.createElement('li');
    li.dataset.type = ev.type;
    if (ev.runId) li.dataset.run = ev.runId;
    const t = document.createElement('span');
    t.className = 't';
    t.textContent = ev.type;
    li.append(t, ` ${time(ev.ts)} ${summary(ev)}`);
    const log = $('.log', card);
    log.append(li);
    while (log.children.length > 200) log.firstElementChild.remove();
    log.scrollTop = log.scrollHeight;
    const status = STATUS[ev.type] || 'idle';
    card.dataset.status = status;
    $('.status', card).textContent = status;
  }
  if (ev.type === 'started' || ev.type === 'done' || ev.type === 'error') soon(ev.npc);
}

// A replay brings many events at once: one history fetch per channel for all of them.
const pending = new Map();
function soon(npc) {
  if (pending.has(npc)) return;
  pending.set(npc, setTimeout(() => { pending.delete(npc); history(npc); }, 150));
}

async function history(npc) {
  const r = await fetch(`/api/runs?npc=${encodeURIComponent(npc)}&limit=5`, { headers: { accept: 'application/json' } });
  if (!r.ok) return;
  const { runs } = await r.json();
  for (const card of cards.get(npc) || []) {
    const body = $('.runs tbody', card);
    body.replaceChildren(...runs.map((run) => {
      const tr = document.createElement('tr');
      tr.dataset.run = run.runId;
      tr.dataset.status = run.status;
      const took = run.endedAt ? `${((run.endedAt - run.startedAt) / 1000).toFixed(1)} s` : '…';
      for (const text of [run.runId.slice(0, 8), run.status, time(run.startedAt), took]) {
        const td = document.createElement('td');
        td.textContent = text;
        tr.append(td);
      }
      return tr;
    }));
  }
}

async function run(agent, card) {
  const button = $('.run', card);
  const result = $('.result', card);
  button.disabled = true;
  result.className = 'result';
  result.textContent = 'Starting…';
  try {
    const r = await fetch(`/api/run/${encodeURIComponent(agent.agent)}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ payload: { from: 'console' } }),
    });
    const body = await r.json().catch(() => ({}));
    if (r.ok) {
      result.textContent = `Run ${body.runId} started.`;
    } else {
      result.className = 'result bad';
      result.textContent = `Could not start (${r.status}): ${body.error || r.statusText}`;
    }
  } catch (e) {
    result.className = 'result bad';
    result.textContent = `Could not start: ${e.message}`;
  } finally {
    button.disabled = false;
  }
}

function render() {
  const section = $('#agents');
  if (agents.length === 0) {
    const p = document.createElement('p');
    p.className = 'empty';
    p.textContent = 'No agents yet: add them to agents.json in the data directory (it is re-read when it changes).';
    section.replaceChildren(p);
    return;
  }
  const tpl = $('#card');
  section.replaceChildren(...agents.map((agent) => {
    const card = tpl.content.firstElementChild.cloneNode(true);
    card.id = `agent-${agent.agent}`;
    card.dataset.agent = agent.agent;
    $('.name', card).textContent = agent.name || agent.agent;
    $('.desc', card).textContent = agent.description || '';
    $('.npc', card).textContent = `channel ${agent.npc}`;
    $('.demo', card).hidden = !agent.demo;
    $('.run', card).addEventListener('click', () => run(agent, card));
    if (!cards.has(agent.npc)) cards.set(agent.npc, []);
    cards.get(agent.npc).push(card);
    return card;
  }));
}

function stream() {
  const npcs = [...cards.keys()].join(',');
  const state = $('#stream-state');
  const es = new EventSource(`/api/stream?npc=${encodeURIComponent(npcs)}`);
  es.onopen = () => {
    state.dataset.state = 'open';
    state.textContent = 'Live: events appear as they happen.';
  };
  es.onerror = () => {
    state.dataset.state = 'closed';
    state.textContent = 'The event stream dropped; the browser reconnects and replays what was missed.';
  };
  for (const type of Object.keys(STATUS)) {
    es.addEventListener(type, (m) => {
      try { show(JSON.parse(m.data)); } catch (e) { /* not an event of ours */ }
    });
  }
  es.addEventListener('missed', () => notice('Some older events were not replayed (too far behind).'));
}

async function main() {
  const me = await fetch('/auth/me', { headers: { accept: 'application/json' } });
  if (me.status === 401) {
    location.href = `/auth/login?rd=${encodeURIComponent(location.pathname)}`;
    return;
  }
  if (me.ok) {
    const who = await me.json();
    $('#who').textContent = `signed in as ${who.name || who.user}`;
  }
  const r = await fetch('/api/agents', { headers: { accept: 'application/json' } });
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    notice(`Could not list the agents (${r.status}): ${body.error || r.statusText}`);
    return;
  }
  agents = await r.json();
  render();
  await Promise.all([...cards.keys()].map(history));
  if (cards.size > 0) stream();
  else $('#stream-state').hidden = true;
}

main().catch((e) => notice(`The console failed: ${e.message}`));
