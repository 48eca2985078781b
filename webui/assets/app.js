// Corral's web UI: the state from /api/state (polled: usage, pressure and shares change
// without events), agents, frameworks and tasks kept live from /api/events (the operator event
// stream as server-sent events), and a task's output from /api/output.
// With ?once in the URL the event stream is closed after its first (state) message: headless
// browsers that wait for the page to go idle (the test suite's) can then take their snapshot.
'use strict';

const TERMINAL = new Set(['Finished', 'Failed', 'Killed', 'Error', 'Lost', 'Dropped', 'Gone', 'GoneByOperator']);
const model = {
  state: null,          // the last /api/state
  agents: new Map(),    // from the event stream
  frameworks: new Map(),
  tasks: new Map(),     // framework_id + '/' + id -> task
  subscribed: false,
  events: [],           // the most recent events, newest last
};
const params = new URLSearchParams(location.search);
const once = params.has('once');

function esc(s) {
  return String(s === undefined || s === null ? '' : s)
    .replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}
function bytes(n) {
  if (!n) return '0 B';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + units[i];
}
function cpus(milli) { return ((milli || 0) / 1000).toFixed(2); }
function pct(x) { return (100 * (x || 0)).toFixed(1) + '%'; }
function psi(v) { return ((v || 0) / 100).toFixed(1) + '%'; }
function taskKey(t) { return t.framework_id + '/' + t.id; }
function snake(s) { return String(s).replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase(); }

function applyEvent(e) {
  switch (e.type) {
    case 'AGENT_ADDED': case 'AGENT_UPDATED': model.agents.set(e.agent.id, e.agent); break;
    case 'AGENT_REMOVED': model.agents.delete(e.agent_id); break;
    case 'FRAMEWORK_ADDED': case 'FRAMEWORK_UPDATED': model.frameworks.set(e.framework.id, e.framework); break;
    case 'FRAMEWORK_REMOVED': model.frameworks.delete(e.framework_id); break;
    case 'TASK_ADDED': case 'TASK_UPDATED': {
      const key = taskKey(e.task);
      const old = model.tasks.get(key);
      model.tasks.set(key, Object.assign({}, e.task, { usage: old ? old.usage : null }));
      break;
    }
  }
}

function describe(e) {
  if (e.task) return `${e.type} task ${e.task.id}: TASK_${snake(e.task.state)}`;
  if (e.agent) return `${e.type} agent ${e.agent.id} (${e.agent.hostname}) ${e.agent.status}`;
  if (e.framework) return `${e.type} framework ${e.framework.id} (${e.framework.name})`;
  return `${e.type} ${e.agent_id || e.framework_id || ''}`;
}

// The rows to show: the event stream's view once subscribed, else the polled state's.
function agents() {
  const rich = new Map(((model.state && model.state.agents) || []).map(a => [a.id, a]));
  if (!model.subscribed) return [...rich.values()];
  return [...model.agents.values()].map(a => Object.assign({}, rich.get(a.id) || {}, a));
}
function tasks() {
  const rich = new Map(((model.state && model.state.tasks) || []).map(t => [taskKey(t), t]));
  if (!model.subscribed) return [...rich.values()];
  return [...model.tasks.values()].map(t => {
    const r = rich.get(taskKey(t));
    return Object.assign({}, t, { usage: r ? r.usage : null });
  });
}
function frameworks() {
  const rich = new Map(((model.state && model.state.frameworks) || []).map(f => [f.id, f]));
  if (!model.subscribed) return [...rich.values()];
  return [...model.frameworks.values()].map(f => Object.assign({}, rich.get(f.id) || {}, f));
}

function setRows(id, rows) { document.getElementById(id).innerHTML = rows.join(''); }

function renderOverview(as, fs, ts) {
  const total = { cpus_milli: 0, mem_bytes: 0 }, used = { cpus_milli: 0, mem_bytes: 0 };
  for (const a of as) {
    if (a.status === 'Unreachable') continue;
    total.cpus_milli += a.total.cpus_milli || 0; total.mem_bytes += a.total.mem_bytes || 0;
    if (a.used) { used.cpus_milli += a.used.cpus_milli || 0; used.mem_bytes += a.used.mem_bytes || 0; }
  }
  const live = ts.filter(t => !TERMINAL.has(t.state));
  const running = ts.filter(t => t.state === 'Running');
  const m = model.state && model.state.masters;
  const cards = [
    [as.length, `agents (${as.filter(a => a.status === 'Active').length} active)`],
    [fs.length, 'frameworks'],
    [live.length, `live tasks (${running.length} running)`],
    [`${cpus(used.cpus_milli)} / ${cpus(total.cpus_milli)}`, 'CPUs used / total'],
    [`${bytes(used.mem_bytes)} / ${bytes(total.mem_bytes)}`, 'memory used / total'],
    [m && m.leader ? m.leader : '-', `leading master (${m ? m.members.length : 0} masters)`],
  ];
  document.getElementById('cards').innerHTML = cards
    .map(([n, l]) => `<div class="card"><div class="n">${esc(n)}</div><div class="l">${esc(l)}</div></div>`)
    .join('');
}

function limits(t) {
  const r = t.resources || {};
  return `${cpus(r.cpus_milli)} cpu, ${bytes(r.mem_bytes)}`;
}
function usage(t) {
  const u = t.usage;
  if (!u) return '-';
  return `${bytes(u.mem_current_bytes)} mem, ${u.pids_current} pids`;
}
function reason(t) {
  let s = t.reason ? t.reason : '';
  if (t.exit_code !== null && t.exit_code !== undefined) s += ` (exit ${t.exit_code})`;
  return s;
}

function render() {
  const as = agents(), fs = frameworks(), ts = tasks();
  renderOverview(as, fs, ts);
  setRows('agents-body', as.map(a => {
    const p = a.pressure;
    return `<tr data-agent="${esc(a.id)}"><td>${esc(a.id)}</td><td>${esc(a.hostname)}</td><td>${esc(a.status)}</td>` +
      `<td>${cpus(a.used && a.used.cpus_milli)} / ${cpus(a.total.cpus_milli)}</td>` +
      `<td>${bytes(a.used && a.used.mem_bytes)} / ${bytes(a.total.mem_bytes)}</td>` +
      `<td>${a.offered ? cpus(a.offered.cpus_milli) + ' cpu, ' + bytes(a.offered.mem_bytes) : '-'}</td>` +
      `<td>${p ? `cpu ${psi(p.cpu_some_avg10)} mem ${psi(p.memory_some_avg10)} io ${psi(p.io_some_avg10)}` : '-'}</td>` +
      `<td>${esc(a.version)}</td></tr>`;
  }));
  setRows('frameworks-body', fs.map(f =>
    `<tr><td>${esc(f.id)}</td><td>${esc(f.name)}</td><td>${esc(f.principal)}</td><td>${esc((f.roles || []).join(', '))}</td>` +
    `<td>${f.connected === undefined ? '-' : f.connected ? 'yes' : 'no'}</td>` +
    `<td>${f.dominant_share === undefined ? '-' : pct(f.dominant_share)}</td>` +
    `<td>${f.used ? cpus(f.used.cpus_milli) + ' cpu, ' + bytes(f.used.mem_bytes) : '-'}</td></tr>`));
  setRows('roles-body', ((model.state && model.state.roles) || []).map(r =>
    `<tr><td>${esc(r.name)}</td><td>${esc(r.weight)}</td><td>${pct(r.dominant_share)}</td><td>${r.starved_ms ? (r.starved_ms / 1000).toFixed(0) + ' s' : '-'}</td></tr>`));
  setRows('tasks-body', ts.map(t =>
    `<tr class="task-row" data-task="${esc(t.id)}" data-state="${esc(t.state)}"><td><a href="#task=${encodeURIComponent(t.id)}">${esc(t.id)}</a></td>` +
    `<td>${esc(t.name)}</td><td><span class="state ${esc(t.state)}">TASK_${esc(snake(t.state))}</span></td>` +
    `<td>${esc(reason(t))}</td><td>${esc(limits(t))}</td><td>${esc(usage(t))}</td><td>${esc(t.agent_id)}</td><td>${esc(t.framework_id)}</td></tr>`));
  const m = model.state && model.state.masters;
  document.getElementById('masters-term').textContent = m ? `Leader ${m.leader || 'unknown'}, term ${m.term}` : '';
  setRows('masters-body', ((m && m.members) || []).map(x =>
    `<tr><td>${esc(x.id)}</td><td>${esc(x.address)}</td><td>${x.is_leader ? 'leader' : 'follower'}</td><td>${x.lag === null || x.lag === undefined ? '-' : esc(x.lag)}</td></tr>`));
  setRows('events-list', model.events.slice().reverse().map(e =>
    `<li><code>${esc(e.cursor)}</code> ${esc(describe(e))}</li>`));
  renderTask(ts);
}

// The task named in the URL (#task=ID): its facts and its output.
let shownTask = null, shownState = null;
function renderTask(ts) {
  const m = /^#task=(.+)$/.exec(location.hash);
  const section = document.getElementById('task-detail');
  if (!m) { section.hidden = true; shownTask = null; return; }
  const id = decodeURIComponent(m[1]);
  const t = ts.find(x => x.id === id);
  section.hidden = false;
  document.getElementById('task-title').textContent = id;
  document.getElementById('task-logs-cmd').textContent = `corral logs ${id}`;
  const facts = t ? [
    ['State', 'TASK_' + snake(t.state)], ['Reason', reason(t) || '-'], ['Message', t.message || '-'],
    ['Limits', limits(t)], ['Usage', usage(t)], ['Agent', t.agent_id], ['Framework', t.framework_id],
  ] : [['State', 'unknown to this UI']];
  if (t && t.limitation) {
    const l = t.limitation;
    facts.push(['Limit hit', `${l.resource}: limit ${l.resource === 'Memory' ? bytes(l.limit) : l.limit}` +
      (l.peak ? `, peak ${l.resource === 'Memory' ? bytes(l.peak) : l.peak}` : '')]);
    facts.push(['Kernel counters', Object.entries(l.events || {}).map(([k, v]) => `${k} ${v}`).join(', ') || '-']);
  }
  document.getElementById('task-facts').innerHTML =
    facts.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join('');
  const state = t ? t.state : null;
  if (shownTask !== id || shownState !== state) {
    shownTask = id; shownState = state;
    loadOutput(id, 'stdout'); loadOutput(id, 'stderr');
  }
}

async function loadOutput(id, stream) {
  const pre = document.getElementById('task-' + stream);
  try {
    const r = await fetch(`/api/output?task=${encodeURIComponent(id)}&stream=${stream}`);
    const body = await r.text();
    pre.textContent = r.ok ? (body || '(empty)') : `cannot read the ${stream}: ${body}`;
  } catch (err) {
    pre.textContent = `cannot read the ${stream}: ${err}`;
  }
}

async function loadState() {
  const error = document.getElementById('error');
  try {
    const r = await fetch('/api/state');
    if (!r.ok) throw new Error(await r.text());
    model.state = await r.json();
    error.hidden = true;
  } catch (err) {
    error.textContent = `Cannot read the cluster state: ${err.message || err}`;
    error.hidden = false;
  }
  render();
}

function follow() {
  const live = document.getElementById('live');
  const es = new EventSource('/api/events');
  es.addEventListener('subscribed', msg => {
    const s = JSON.parse(msg.data);
    model.agents.clear(); model.frameworks.clear(); model.tasks.clear();
    for (const e of s.state) applyEvent(e);
    model.subscribed = true;
    live.textContent = `live from ${s.cursor}`; live.className = 'badge on';
    if (once) { es.close(); live.textContent = `snapshot at ${s.cursor}`; }
    render();
  });
  es.addEventListener('resumed', msg => {
    const r = JSON.parse(msg.data);
    live.textContent = `live (resumed at ${r.master})`; live.className = 'badge on';
  });
  es.onmessage = msg => {
    const e = JSON.parse(msg.data);
    applyEvent(e);
    model.events.push(e);
    if (model.events.length > 200) model.events.shift();
    live.textContent = `live at ${e.cursor}`;
    render();
    // Usage and shares follow task changes: refresh them soon after.
    if (e.task) scheduleStateRefresh();
  };
  es.onerror = () => { live.textContent = 'reconnecting'; live.className = 'badge off'; };
}

let refresh = null;
function scheduleStateRefresh() {
  if (refresh) return;
  refresh = setTimeout(() => { refresh = null; loadState(); }, 500);
}

window.addEventListener('hashchange', render);
loadState().then(follow);
if (!once) setInterval(loadState, 5000);
