// What every page shares: requests to this server (with the API key), NDJSON streams, DOM building
// without HTML strings, and formatting. Nothing here ever talks to another origin.

const KEY_STORAGE = 'a3s-power:api-key';

// The page lives at <server>/ui/; the APIs are at the server's root.
export const base = new URL('..', location.href);

export function url(path, query) {
  const u = new URL(path.replace(/^\/+/, ''), base);
  if (u.origin !== location.origin) throw new Error('refusing a request to another origin');
  for (const [k, v] of Object.entries(query || {})) {
    if (v !== undefined && v !== null && v !== '') u.searchParams.set(k, v);
  }
  return u;
}

export function getKey() {
  try { return localStorage.getItem(KEY_STORAGE) || ''; } catch { return ''; }
}

export function setKey(value) {
  if (value) localStorage.setItem(KEY_STORAGE, value); else localStorage.removeItem(KEY_STORAGE);
}

const authListeners = [];
export function onAuthNeeded(fn) { authListeners.push(fn); }

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function errorMessage(r) {
  let text = '';
  try { text = await r.text(); } catch { /* nothing to read */ }
  try {
    const body = JSON.parse(text);
    const e = body.error;
    if (typeof e === 'string') return e;
    if (e && typeof e.message === 'string') return e.message;
  } catch { /* not JSON */ }
  return text.trim().slice(0, 300) || `${r.status} ${r.statusText}`;
}

export function headers(json) {
  const h = {};
  if (json) h['Content-Type'] = 'application/json';
  const key = getKey();
  if (key) h.Authorization = 'Bearer ' + key;
  return h;
}

// fetch() against this server; a status that is not 2xx throws an ApiError with the server's message.
export async function request(path, { method = 'GET', body, query, signal } = {}) {
  const r = await fetch(url(path, query), {
    method, headers: headers(body !== undefined), signal, credentials: 'same-origin', cache: 'no-store',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!r.ok) {
    const message = await errorMessage(r);
    if (r.status === 401) authListeners.forEach((fn) => fn(message));
    throw new ApiError(r.status, message);
  }
  return r;
}

export async function getJSON(path, options) {
  return (await request(path, options)).json();
}

// The objects of an NDJSON answer as they arrive. A line carrying "error" throws it.
export async function* ndjson(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl).trim();
      buffer = buffer.slice(nl + 1);
      if (line) yield parseLine(line);
    }
  }
  buffer += decoder.decode();
  if (buffer.trim()) yield parseLine(buffer.trim());
}

function parseLine(line) {
  const obj = JSON.parse(line);
  if (obj && obj.error) throw new ApiError(200, typeof obj.error === 'string' ? obj.error : JSON.stringify(obj.error));
  return obj;
}

// h('div', {class: 'x', onclick: fn}, 'text', child): elements from data, never from HTML strings.
export function h(tag, attrs, ...children) {
  const el = tag.includes(':')
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.split(':')[1])
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) { if (typeof v === 'function') el.addEventListener(k.slice(2), v); }
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export const $ = (id) => document.getElementById(id);

export function formatBytes(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return '';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  let v = Number(n);
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i += 1; }
  return `${v >= 100 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

export function formatNumber(n, digits = 0) {
  if (n === undefined || n === null || Number.isNaN(n)) return '–';
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: digits });
}

export function formatAgo(iso) {
  if (!iso) return '';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return '';
  const s = (Date.now() - t) / 1000;
  const abs = Math.abs(s);
  const [v, unit] = abs < 60 ? [abs, 'second'] : abs < 3600 ? [abs / 60, 'minute'] : abs < 86400 ? [abs / 3600, 'hour']
    : abs < 86400 * 365 * 10 ? [abs / 86400, 'day'] : [abs / 86400 / 365, 'year'];
  const r = Math.round(v);
  const text = `${r} ${unit}${r === 1 ? '' : 's'}`;
  return s >= 0 ? `${text} ago` : `in ${text}`;
}

let bannerTimer = 0;
export function banner(text, kind = 'error') {
  const el = $('banner');
  el.textContent = text;
  el.className = 'banner ' + kind;
  el.hidden = !text;
  clearTimeout(bannerTimer);
  if (text && kind !== 'error') bannerTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

export function download(filename, data) {
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: 'application/json' });
  const a = h('a', { href: URL.createObjectURL(blob), download: filename });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

// /metrics in Prometheus' text format: {name: [{labels: {...}, value}]}.
export async function fetchMetrics() {
  const text = await (await request('/metrics')).text();
  const out = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || '').matchAll(/(\w+)="((?:\\.|[^"\\])*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === 'n' ? '\n' : c));
    (out[m[1]] ||= []).push({ labels, value: Number(m[3]) });
  }
  return out;
}

export function metricValue(metrics, name, labels = {}) {
  return (metrics[name] || []).filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}
