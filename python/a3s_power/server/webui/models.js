// Models: what is installed (/api/tags, /api/show), pulled (/api/pull), loaded (/api/ps, /metrics).

import { $, h, append, clear, request, getJSON, ndjson, banner, formatBytes, formatAgo, fetchMetrics, metricValue } from './api.js';

let pulling = null; // the AbortController of the pull in progress
let timer = 0;
const shown = new Map(); // model name -> /api/show answer
let detail = null; // {name, tab}

async function showInfo(name) {
  if (!shown.has(name)) shown.set(name, await getJSON('/api/show', { method: 'POST', body: { model: name } }));
  return shown.get(name);
}

function contextLength(info) {
  const mi = info.model_info || {};
  const arch = mi['general.architecture'];
  return mi[`${arch}.context_length`];
}

// --- installed ---

async function refreshInstalled() {
  let list;
  try {
    list = (await getJSON('/api/tags')).models || [];
  } catch (e) {
    banner(`Installed models: ${e.message}`);
    return;
  }
  const tbody = clear($('installed').querySelector('tbody'));
  $('installed-empty').hidden = list.length > 0;
  for (const m of list) {
    const d = m.details || {};
    const ctx = h('td', { class: 'num ctx' }, '…');
    const caps = h('td', { class: 'capcell' }, (m.capabilities || []).map((c) => h('span', { class: 'cap' }, c)));
    const actions = h('td', { class: 'actions' },
      h('button', { type: 'button', class: 'ghost small-btn', onclick: () => openDetail(m.name, 'modelfile') }, 'Show'),
      h('button', { type: 'button', class: 'ghost small-btn', onclick: () => copyModel(m.name) }, 'Copy'),
      h('button', { type: 'button', class: 'danger small-btn delete', onclick: () => deleteModel(m.name) }, 'Delete'));
    tbody.append(h('tr', { dataset: { model: m.name } },
      h('td', { class: 'name' }, m.name), h('td', { class: 'num' }, formatBytes(m.size)), h('td', null, d.family || ''),
      h('td', null, d.parameter_size || ''), h('td', null, d.quantization_level || ''), ctx, caps,
      h('td', { class: 'muted' }, formatAgo(m.modified_at)), actions));
    showInfo(m.name).then((info) => {
      const n = contextLength(info);
      ctx.textContent = n ? n.toLocaleString('en-US') : '';
      if (!(m.capabilities || []).length) append(caps, (info.capabilities || []).map((c) => h('span', { class: 'cap' }, c)));
    }).catch(() => { ctx.textContent = ''; });
  }
}

async function copyModel(name) {
  const destination = window.prompt(`Copy ${name} to the name:`, `${name.replace(/:[^:/]*$/, '')}-copy`);
  if (!destination) return;
  try {
    await request('/api/copy', { method: 'POST', body: { source: name, destination } });
    banner(`Copied ${name} to ${destination}`, 'info');
  } catch (e) {
    banner(`Copy: ${e.message}`);
  }
  refreshInstalled();
}

async function deleteModel(name) {
  if (!window.confirm(`Delete ${name} from this server's store?`)) return;
  try {
    await request('/api/delete', { method: 'DELETE', body: { model: name } });
    shown.delete(name);
    banner(`Deleted ${name}`, 'info');
    if (detail && detail.name === name) closeDetail();
  } catch (e) {
    banner(`Delete: ${e.message}`);
  }
  refreshInstalled();
  refreshLoaded();
}

// --- a model's Modelfile, template, parameters ---

async function openDetail(name, tab) {
  detail = { name, tab };
  $('model-detail').hidden = false;
  $('detail-title').textContent = name;
  const body = $('detail-body');
  body.textContent = 'Loading…';
  document.querySelectorAll('#model-detail .tab').forEach((b) => b.classList.toggle('active', b.dataset.tab === tab));
  try {
    const info = await showInfo(name);
    if (!detail || detail.name !== name || detail.tab !== tab) return;
    const text = {
      modelfile: info.modelfile,
      template: info.template,
      parameters: info.parameters,
      info: JSON.stringify({ details: info.details, capabilities: info.capabilities, model_info: info.model_info }, null, 2),
    }[tab];
    body.textContent = text || '(none)';
  } catch (e) {
    body.textContent = e.message;
  }
  $('model-detail').scrollIntoView({ behavior: 'smooth', block: 'nearest' });
}

function closeDetail() {
  detail = null;
  $('model-detail').hidden = true;
}

// --- pull ---

function layerRow(box, digest) {
  let row = box.querySelector(`[data-digest="${CSS.escape(digest)}"]`);
  if (!row) {
    const fill = h('div', { class: 'fill' });
    row = h('div', { class: 'layer', dataset: { digest, percent: '0' } },
      h('span', { class: 'layer-name' }, digest.replace(/^sha256:/, '').slice(0, 12)),
      h('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100' }, fill),
      h('span', { class: 'layer-text' }));
    box.querySelector('.layers').append(row);
  }
  return row;
}

async function pull(name, insecure) {
  const box = clear($('pull-progress'));
  const status = h('div', { class: 'pull-status', id: 'pull-status' }, 'starting…');
  box.append(h('div', { class: 'pull-title' }, h('strong', null, name)), status, h('div', { class: 'layers' }));
  pulling = new AbortController();
  $('pull-button').disabled = true;
  $('pull-cancel').hidden = false;
  let last = '';
  try {
    const r = await request('/api/pull', { method: 'POST', body: { model: name, insecure, stream: true }, signal: pulling.signal });
    for await (const line of ndjson(r)) {
      last = line.status || last;
      if (line.digest) {
        const row = layerRow(box, line.digest);
        const total = line.total || 0;
        const done = Math.min(line.completed || 0, total);
        const pct = total ? Math.floor((done / total) * 100) : 0;
        row.dataset.percent = String(pct);
        row.querySelector('.fill').style.width = `${pct}%`;
        row.querySelector('.bar').setAttribute('aria-valuenow', String(pct));
        row.querySelector('.layer-text').textContent = `${formatBytes(done)} / ${formatBytes(total)} · ${pct}%`;
      } else {
        status.textContent = line.status || '';
      }
    }
    status.textContent = last;
    status.dataset.state = last === 'success' ? 'success' : 'done';
    refreshInstalled();
  } catch (e) {
    status.textContent = e.name === 'AbortError' ? 'cancelled' : `error: ${e.message}`;
    status.dataset.state = 'error';
  } finally {
    pulling = null;
    $('pull-button').disabled = false;
    $('pull-cancel').hidden = true;
  }
}

// --- loaded ---

function placement(m) {
  if (!m.size_vram) return 'CPU';
  const gpus = (m.gpus || []).map((g) => g.name).filter(Boolean);
  const where = gpus.length ? ` (${[...new Set(gpus)].join(', ')})` : '';
  if (m.size_vram >= m.size) return `GPU${where}`;
  return `${Math.round((m.size_vram / m.size) * 100)}% GPU${where}`;
}

async function refreshLoaded() {
  let list;
  let metrics = {};
  try {
    list = (await getJSON('/api/ps')).models || [];
  } catch (e) {
    return;
  }
  try { metrics = await fetchMetrics(); } catch { /* slots unknown */ }
  const tbody = clear($('loaded').querySelector('tbody'));
  $('loaded-empty').hidden = list.length > 0;
  for (const m of list) {
    const busy = metricValue(metrics, 'power_slots_busy', { model: m.name });
    const slots = metricValue(metrics, 'power_slots', { model: m.name });
    const far = Date.parse(m.expires_at) > Date.now() + 100 * 365 * 86400e3;
    tbody.append(h('tr', { dataset: { model: m.name } },
      h('td', { class: 'name' }, m.name), h('td', { class: 'num' }, formatBytes(m.size)), h('td', null, placement(m)),
      h('td', { class: 'num' }, (m.context_length || '').toLocaleString('en-US')),
      h('td', { class: 'num' }, slots ? `${busy} / ${slots}` : ''),
      h('td', { class: 'muted' }, far ? 'never' : formatAgo(m.expires_at)),
      h('td', { class: 'actions' }, h('button', { type: 'button', class: 'ghost small-btn unload', onclick: () => unload(m.name) }, 'Unload'))));
  }
}

async function unload(name) {
  try {
    await request('/api/generate', { method: 'POST', body: { model: name, keep_alive: 0 } });
  } catch (e) {
    banner(`Unload: ${e.message}`);
  }
  refreshLoaded();
}

export function init() {
  $('pull-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const name = $('pull-name').value.trim();
    if (name && !pulling) pull(name, $('pull-insecure').checked);
  });
  $('pull-cancel').addEventListener('click', () => pulling && pulling.abort());
  $('models-refresh').addEventListener('click', () => { shown.clear(); refreshInstalled(); refreshLoaded(); });
  $('detail-close').addEventListener('click', closeDetail);
  document.querySelectorAll('#model-detail .tab').forEach((b) => b.addEventListener('click', () => detail && openDetail(detail.name, b.dataset.tab)));
}

export function show() {
  refreshInstalled();
  refreshLoaded();
  clearInterval(timer);
  timer = setInterval(refreshLoaded, 5000);
}

export function hide() {
  clearInterval(timer);
}
