// Usage: /v1/usage per model per day as charts, and the queue and slots live from /metrics.

import { $, h, append, clear, getJSON, formatNumber, fetchMetrics, metricValue } from './api.js';
import { barChart, lineChart, color } from './chart.js';

const DAY = 86400e3;
const knownModels = new Set();
const live = { queue: [], busy: [], times: [] };
let liveTimer = 0;

const iso = (t) => new Date(t).toISOString().slice(0, 10);
const short = (day) => day.slice(5); // MM-DD

function days(start, end) {
  const out = [];
  for (let t = Date.parse(start + 'T00:00:00Z'); t <= Date.parse(end + 'T00:00:00Z') && out.length < 800; t += DAY) out.push(iso(t));
  return out;
}

function money(v) {
  if (!v) return '$0';
  return v < 0.01 ? `$${v.toPrecision(2)}` : `$${v.toFixed(2)}`;
}

function card(label, value, id) {
  return h('div', { class: 'card', id }, h('div', { class: 'card-value' }, value), h('div', { class: 'card-label' }, label));
}

async function refresh() {
  const start = $('usage-start').value;
  const end = $('usage-end').value;
  const model = $('usage-model').value;
  const message = $('usage-message');
  let usage;
  try {
    usage = await getJSON('/v1/usage', { query: { start_date: start, end_date: end, model } });
    message.hidden = true;
  } catch (e) {
    message.textContent = e.status === 404 ? 'Usage tracking is not enabled on this server.' : `Usage: ${e.message}`;
    message.hidden = false;
    return;
  }
  const rows = usage.data || [];
  rows.forEach((r) => knownModels.add(r.model));
  const select = $('usage-model');
  const chosen = select.value;
  append(clear(select), [h('option', { value: '' }, 'all models'), ...[...knownModels].sort().map((m) => h('option', { value: m }, m))]);
  select.value = chosen;

  let labels = days(start || rows[0]?.date || iso(Date.now()), end || iso(Date.now()));
  if (!labels.length) labels = [...new Set(rows.map((r) => r.date))];
  const models = [...new Set(rows.map((r) => r.model))].sort();
  const index = new Map(labels.map((d, i) => [d, i]));
  const series = (field, extra = {}) => models.map((m, k) => {
    const values = labels.map(() => null);
    for (const r of rows) if (r.model === m && index.has(r.date)) values[index.get(r.date)] = r[field] ?? null;
    return { name: m, color: color(k), values, ...extra };
  });

  barChart($('chart-requests'), { id: 'requests', labels, series: series('requests'), labelText: short, format: (v) => formatNumber(v, 1) });
  const tokenSeries = [];
  models.forEach((m, k) => {
    const of = (field) => labels.map((d) => rows.find((r) => r.model === m && r.date === d)?.[field] ?? null);
    tokenSeries.push({ name: `${m} · in`, color: color(k), opacity: 0.45, values: of('input_tokens') });
    tokenSeries.push({ name: `${m} · out`, color: color(k), values: of('output_tokens') });
  });
  barChart($('chart-tokens'), { id: 'tokens', labels, series: tokenSeries, labelText: short, format: (v) => formatNumber(v, 1) });
  lineChart($('chart-ttft'), { id: 'ttft', labels, series: series('ttft_ms'), labelText: short, unit: ' ms',
    format: (v) => formatNumber(v, 1) });
  lineChart($('chart-speed'), { id: 'speed', labels, series: series('tokens_per_second'), labelText: short, unit: ' tokens/s',
    format: (v) => formatNumber(v, 1) });
  barChart($('chart-cost'), { id: 'cost', labels, series: series('cost'), labelText: short, format: money,
    emptyText: rows.length ? 'No cost: the server has no prices configured ([pricing] in config.toml).' : undefined });

  // Totals and the table by model: means weighted by requests (TTFT) and output tokens (speed).
  const byModel = new Map();
  for (const r of rows) {
    const a = byModel.get(r.model) || { requests: 0, input: 0, output: 0, cost: 0, ttftSum: 0, ttftN: 0, speedW: 0, speedN: 0 };
    a.requests += r.requests; a.input += r.input_tokens; a.output += r.output_tokens; a.cost += r.cost;
    if (r.ttft_ms !== null && r.ttft_ms !== undefined) { a.ttftSum += r.ttft_ms * r.requests; a.ttftN += r.requests; }
    if (r.tokens_per_second) { a.speedW += r.tokens_per_second * r.output_tokens; a.speedN += r.output_tokens; }
    byModel.set(r.model, a);
  }
  const all = [...byModel.values()].reduce((t, a) => {
    for (const k of Object.keys(a)) t[k] = (t[k] || 0) + a[k];
    return t;
  }, {});
  clear($('usage-totals')).append(
    card('requests', formatNumber(all.requests || 0), 'total-requests'),
    card('tokens in', formatNumber(all.input || 0)),
    card('tokens out', formatNumber(all.output || 0)),
    card('mean time to first token', all.ttftN ? `${formatNumber(all.ttftSum / all.ttftN, 0)} ms` : '–'),
    card('output tokens per second', all.speedN ? formatNumber(all.speedW / all.speedN, 1) : '–'),
    card('cost', money(all.cost || 0)));
  const tbody = clear($('usage-table').querySelector('tbody'));
  for (const [m, a] of [...byModel.entries()].sort()) {
    tbody.append(h('tr', null, h('td', { class: 'name' }, m), h('td', { class: 'num' }, formatNumber(a.requests)),
      h('td', { class: 'num' }, formatNumber(a.input)), h('td', { class: 'num' }, formatNumber(a.output)),
      h('td', { class: 'num' }, a.ttftN ? formatNumber(a.ttftSum / a.ttftN, 0) : '–'),
      h('td', { class: 'num' }, a.speedN ? formatNumber(a.speedW / a.speedN, 1) : '–'),
      h('td', { class: 'num' }, money(a.cost))));
  }
}

async function sample() {
  let metrics;
  try {
    metrics = await fetchMetrics();
  } catch {
    return;
  }
  const queue = metricValue(metrics, 'power_queue_depth');
  const busy = metricValue(metrics, 'power_slots_busy');
  const slots = metricValue(metrics, 'power_slots');
  const loaded = metricValue(metrics, 'power_models_loaded');
  live.queue.push(queue);
  live.busy.push(busy);
  live.times.push(new Date().toTimeString().slice(0, 8));
  for (const k of Object.keys(live)) if (live[k].length > 60) live[k].shift();
  clear($('live-numbers')).append(
    card('waiting in the queue', formatNumber(queue), 'live-queue'),
    card('busy slots', `${formatNumber(busy)} / ${formatNumber(slots)}`, 'live-busy'),
    card('models loaded', formatNumber(loaded)));
  lineChart($('chart-live'), { id: 'live', labels: live.times, labelText: (t) => t,
    series: [{ name: 'queue', color: color(1), values: live.queue }, { name: 'busy slots', color: color(0), values: live.busy }] });
}

export function init() {
  const today = Date.now();
  $('usage-end').value = iso(today);
  $('usage-start').value = iso(today - 13 * DAY);
  $('usage-form').addEventListener('submit', (e) => { e.preventDefault(); refresh(); });
  $('usage-model').addEventListener('change', refresh);
}

export function show() {
  refresh();
  sample();
  clearInterval(liveTimer);
  liveTimer = setInterval(sample, 2000);
}

export function hide() {
  clearInterval(liveTimer);
}
