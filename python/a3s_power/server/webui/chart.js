// Bar and line charts drawn as SVG by the page itself: no library, nothing fetched.

import { h, clear, formatNumber } from './api.js';

const PALETTE = ['#1f6feb', '#e8590c', '#2f9e44', '#ae3ec9', '#f59f00', '#0c8599', '#e03131', '#5c7cfa', '#74b816',
  '#d6336c'];

export function color(i) {
  return PALETTE[i % PALETTE.length];
}

const W = 640;
const H = 230;
const M = { left: 58, right: 14, top: 12, bottom: 34 };

function niceScale(max, ticks = 4) {
  if (!(max > 0)) return { top: 1, step: 0.25 };
  const raw = max / ticks;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((k) => k * p).find((s) => s >= raw);
  return { top: Math.ceil(max / step - 1e-9) * step, step };
}

function tickText(v, format) {
  if (format) return format(v);
  if (Math.abs(v) >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (Math.abs(v) >= 1e3) return `${+(v / 1e3).toFixed(1)}k`;
  return `${+v.toFixed(4)}`;
}

function frame(labels, top, step, format, labelText) {
  const svg = h('svg:svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart-svg', role: 'img' });
  const plotW = W - M.left - M.right;
  const plotH = H - M.top - M.bottom;
  const y = (v) => M.top + plotH - (v / top) * plotH;
  for (let v = 0; v <= top + step / 2; v += step) {
    svg.append(h('svg:line', { x1: M.left, x2: W - M.right, y1: y(v), y2: y(v), class: 'grid-line' }));
    svg.append(h('svg:text', { x: M.left - 6, y: y(v) + 4, class: 'tick', 'text-anchor': 'end' }, tickText(v, format)));
  }
  const band = plotW / Math.max(1, labels.length);
  const every = Math.max(1, Math.ceil(labels.length / 10));
  labels.forEach((label, i) => {
    if (i % every !== 0 && i !== labels.length - 1) return;
    svg.append(h('svg:text', { x: M.left + band * (i + 0.5), y: H - M.bottom + 16, class: 'tick', 'text-anchor': 'middle' },
      labelText ? labelText(label) : label));
  });
  svg.append(h('svg:line', { x1: M.left, x2: W - M.right, y1: y(0), y2: y(0), class: 'axis' }));
  return { svg, y, band, plotH };
}

function legend(series) {
  return h('div', { class: 'legend' }, series.filter((s) => !s.hideInLegend).map((s) => h('span', { class: 'legend-item' },
    h('span', { class: 'swatch', dataset: { series: s.name } }), s.name)));
}

function paintSwatches(el, series) {
  el.querySelectorAll('.swatch').forEach((sw) => {
    const s = series.find((x) => x.name === sw.dataset.series);
    if (s) { sw.style.background = s.color; sw.style.opacity = s.opacity ?? 1; }
  });
}

function empty(el, text) {
  clear(el).append(h('div', { class: 'chart-empty' }, text || 'Nothing to show in this range.'));
}

// series: [{name, color, values: [number|null per label], opacity}]; stacked bars per label.
export function barChart(el, { id, labels, series, format, labelText, unit = '', emptyText }) {
  const totals = labels.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
  if (!series.length || !totals.some((t) => t > 0)) { empty(el, emptyText); return; }
  const { top, step } = niceScale(Math.max(...totals));
  const { svg, y, band } = frame(labels, top, step, format, labelText);
  svg.dataset.chart = id || '';
  svg.dataset.kind = 'bar';
  const width = Math.max(2, Math.min(48, band * 0.7));
  labels.forEach((label, i) => {
    let base = 0;
    const x = M.left + band * i + (band - width) / 2;
    for (const s of series) {
      const v = s.values[i] || 0;
      if (v <= 0) continue;
      const rect = h('svg:rect', {
        x, width, y: y(base + v), height: Math.max(1, y(base) - y(base + v)), class: 'chart-bar',
        dataset: { label, series: s.name, value: v },
      }, h('svg:title', null, `${label} · ${s.name}: ${format ? format(v) : formatNumber(v, 4)}${unit}`));
      rect.style.fill = s.color;
      if (s.opacity !== undefined) rect.style.opacity = s.opacity;
      svg.append(rect);
      base += v;
    }
  });
  clear(el).append(svg, legend(series));
  paintSwatches(el, series);
}

// series: [{name, color, values: [number|null per label]}]; a null leaves a gap.
export function lineChart(el, { id, labels, series, format, labelText, unit = '', emptyText }) {
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  if (!series.length || !all.length) { empty(el, emptyText); return; }
  const { top, step } = niceScale(Math.max(...all, 0));
  const { svg, y, band } = frame(labels, top, step, format, labelText);
  svg.dataset.chart = id || '';
  svg.dataset.kind = 'line';
  const xAt = (i) => M.left + band * (i + 0.5);
  for (const s of series) {
    let d = '';
    let pen = false;
    s.values.forEach((v, i) => {
      if (v === null || v === undefined || !Number.isFinite(v)) { pen = false; return; }
      d += `${pen ? 'L' : 'M'}${xAt(i).toFixed(1)},${y(v).toFixed(1)} `;
      pen = true;
    });
    if (d) {
      const path = h('svg:path', { d, class: 'line', fill: 'none', dataset: { series: s.name } });
      path.style.stroke = s.color;
      svg.append(path);
    }
    if (labels.length <= 62) {
      s.values.forEach((v, i) => {
        if (v === null || v === undefined || !Number.isFinite(v)) return;
        const dot = h('svg:circle', { cx: xAt(i), cy: y(v), r: 3.2, class: 'dot', dataset: { label: labels[i], series: s.name, value: v } },
          h('svg:title', null, `${labels[i]} · ${s.name}: ${format ? format(v) : formatNumber(v, 2)}${unit}`));
        dot.style.fill = s.color;
        svg.append(dot);
      });
    }
  }
  clear(el).append(svg, legend(series));
  paintSwatches(el, series);
}
