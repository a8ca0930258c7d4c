// Chat: conversations kept in this browser's localStorage, answers streamed from /api/chat.

import { $, h, append, clear, request, getJSON, ndjson, banner, download, formatNumber } from './api.js';
import { renderMarkdown } from './markdown.js';

const STORE = 'a3s-power:conversations';
const LAST_MODEL = 'a3s-power:model';
const OPTION_FIELDS = ['temperature', 'num_ctx', 'num_predict'];

let conversations = [];
let currentId = null;
let models = [];
let controller = null; // the AbortController of the answer streaming now
let attachments = []; // [{name, dataUrl}]
let renderPending = 0;

function newId() {
  return Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
}

function load() {
  try {
    const parsed = JSON.parse(localStorage.getItem(STORE) || '[]');
    conversations = Array.isArray(parsed) ? parsed.filter((c) => c && typeof c === 'object' && Array.isArray(c.messages)) : [];
  } catch {
    conversations = [];
  }
}

function save() {
  try {
    localStorage.setItem(STORE, JSON.stringify(conversations));
  } catch (e) {
    banner(`This browser's storage is full; the conversation is not saved (${e.message}). Delete or export some.`);
  }
}

const current = () => conversations.find((c) => c.id === currentId) || null;

function create() {
  const conv = {
    id: newId(), title: 'New chat', model: $('chat-model').value || '', system: '', options: {},
    messages: [], created: Date.now(), updated: Date.now(),
  };
  conversations.unshift(conv);
  currentId = conv.id;
  return conv;
}

function select(id) {
  if (controller) return; // one answer at a time; switching would orphan the stream's target
  currentId = id;
  const conv = current();
  if (conv && conv.model && [...$('chat-model').options].some((o) => o.value === conv.model)) $('chat-model').value = conv.model;
  fillOptions(conv);
  renderList();
  renderMessages();
}

// --- the list of conversations ---

function renderList() {
  const ul = clear($('conversations'));
  const sorted = [...conversations].sort((a, b) => (b.updated || 0) - (a.updated || 0));
  for (const conv of sorted) {
    const title = h('button', { type: 'button', class: 'conv-title', title: conv.title, onclick: () => select(conv.id) }, conv.title);
    const rename = h('button', { type: 'button', class: 'icon conv-rename', title: 'Rename', 'aria-label': 'Rename' }, '✎');
    const remove = h('button', { type: 'button', class: 'icon conv-delete', title: 'Delete', 'aria-label': 'Delete' }, '×');
    const li = h('li', { class: conv.id === currentId ? 'active' : null, dataset: { id: conv.id } }, title, rename, remove);
    rename.addEventListener('click', () => startRename(li, conv));
    remove.addEventListener('click', () => {
      if (!window.confirm(`Delete the conversation “${conv.title}”?`)) return;
      conversations = conversations.filter((c) => c.id !== conv.id);
      if (currentId === conv.id) currentId = conversations[0]?.id ?? null;
      save();
      select(currentId);
    });
    ul.append(li);
  }
}

function startRename(li, conv) {
  const input = h('input', { class: 'conv-rename-input', value: conv.title, 'aria-label': 'New name' });
  let done = false;
  const finish = (keep) => {
    if (done) return;
    done = true;
    const value = input.value.trim();
    if (keep && value) { conv.title = value.slice(0, 120); save(); }
    renderList();
  };
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter') { e.preventDefault(); finish(true); }
    if (e.key === 'Escape') finish(false);
  });
  input.addEventListener('blur', () => finish(true));
  li.replaceChildren(input);
  input.focus();
  input.select();
}

// --- messages ---

function statsText(msg) {
  const s = msg.stats;
  if (!s) return '';
  const parts = [];
  if (s.prompt_eval_count !== undefined) parts.push(`${formatNumber(s.prompt_eval_count)} in`);
  if (s.eval_count !== undefined) parts.push(`${formatNumber(s.eval_count)} out`);
  if (s.eval_count && s.eval_duration) parts.push(`${formatNumber(s.eval_count / (s.eval_duration / 1e9), 1)} tokens/s`);
  if (s.done_reason && s.done_reason !== 'stop') parts.push(s.done_reason);
  return parts.join(' · ');
}

function imageType(b64) {
  if (b64.startsWith('/9j/')) return 'image/jpeg';
  if (b64.startsWith('R0lG')) return 'image/gif';
  if (b64.startsWith('UklG')) return 'image/webp';
  return 'image/png';
}

function messageEl(msg, streaming) {
  const el = h('div', { class: `message ${msg.role}${streaming ? ' streaming' : ''}${msg.stopped ? ' stopped' : ''}`,
    dataset: { role: msg.role } });
  fillMessage(el, msg, streaming);
  return el;
}

function fillMessage(el, msg, streaming) {
  el.className = `message ${msg.role}${streaming ? ' streaming' : ''}${msg.stopped ? ' stopped' : ''}${msg.error ? ' failed' : ''}`;
  const head = h('div', { class: 'message-head' }, h('span', { class: 'who' }, msg.role === 'user' ? 'You' : (msg.model || 'Assistant')));
  if (msg.stopped) head.append(h('span', { class: 'tag stopped-tag' }, 'stopped'));
  const stats = statsText(msg);
  if (stats) head.append(h('span', { class: 'stats' }, stats));
  const parts = [head];
  if (msg.images && msg.images.length) {
    parts.push(h('div', { class: 'message-images' }, msg.images.map((b64) => h('img', { src: `data:${imageType(b64)};base64,${b64}`, alt: 'attached image' }))));
  }
  if (msg.thinking) {
    const details = h('details', { class: 'thinking' }, h('summary', null, streaming && !msg.content ? 'Thinking…' : 'Thinking'),
      h('div', { class: 'thinking-body' }, msg.thinking));
    const old = el.querySelector('details.thinking');
    if (old && old.open) details.open = true; // keep it as the reader left it
    parts.push(details);
  }
  const content = h('div', { class: 'content' });
  if (msg.role === 'assistant') renderMarkdown(msg.content, content);
  else content.append(h('div', { class: 'plain' }, msg.content));
  if (msg.tool_calls && msg.tool_calls.length) {
    content.append(h('pre', { class: 'tool-calls' }, JSON.stringify(msg.tool_calls, null, 2)));
  }
  if (streaming && !msg.content && !msg.thinking) content.append(h('span', { class: 'cursor' }, '▍'));
  parts.push(content);
  if (msg.error) parts.push(h('div', { class: 'error' }, msg.error));
  el.replaceChildren(...parts);
}

function renderMessages() {
  const box = clear($('messages'));
  const conv = current();
  if (!conv || !conv.messages.length) {
    box.append(h('div', { class: 'empty-chat' }, h('h2', null, 'A3S Power'),
      h('p', { class: 'muted' }, 'Pick a model and send a message. Conversations stay in this browser.')));
    return;
  }
  conv.messages.forEach((msg, i) => box.append(messageEl(msg, controller && i === conv.messages.length - 1)));
  box.scrollTop = box.scrollHeight;
}

function scheduleRender(msg) {
  if (renderPending) return;
  renderPending = setTimeout(() => {
    renderPending = 0;
    const box = $('messages');
    const el = box.lastElementChild;
    if (!el || !el.classList.contains('message')) return;
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    fillMessage(el, msg, Boolean(controller));
    if (atBottom) box.scrollTop = box.scrollHeight;
  }, 50);
}

// --- options ---

function fillOptions(conv) {
  $('opt-system').value = conv?.system || '';
  for (const f of OPTION_FIELDS) $(`opt-${f}`).value = conv?.options?.[f] ?? '';
  $('opt-think').value = conv?.think ?? '';
}

function readOptions(conv) {
  conv.system = $('opt-system').value;
  conv.options = {};
  for (const f of OPTION_FIELDS) {
    const v = $(`opt-${f}`).value.trim();
    if (v !== '' && Number.isFinite(Number(v))) conv.options[f] = Number(v);
  }
  conv.think = $('opt-think').value;
}

function thinkValue(v) {
  if (v === 'true') return true;
  if (v === 'false') return false;
  return v || undefined;
}

// --- sending and stopping ---

function setBusy(busy) {
  $('send').hidden = busy;
  $('stop').hidden = !busy;
  $('chat-status').textContent = busy ? 'generating…' : '';
  $('composer').classList.toggle('busy', busy);
}

async function send() {
  if (controller) return;
  const text = $('prompt').value.trim();
  if (!text && !attachments.length) return;
  const model = $('chat-model').value;
  if (!model) { banner('Pick a model first (pull one on the Models page).'); return; }
  const conv = current() || create();
  readOptions(conv);
  conv.model = model;
  const user = { role: 'user', content: text };
  if (attachments.length) user.images = attachments.map((a) => a.dataUrl.slice(a.dataUrl.indexOf(',') + 1));
  if (conv.title === 'New chat') conv.title = (text || 'Image').replace(/\s+/g, ' ').slice(0, 48);
  const history = conv.messages.filter((m) => !m.error || m.content);
  conv.messages.push(user);
  const reply = { role: 'assistant', model, content: '', thinking: '' };
  conv.messages.push(reply);
  conv.updated = Date.now();
  $('prompt').value = '';
  attachments = [];
  renderAttachments();
  controller = new AbortController();
  setBusy(true);
  save();
  renderList();
  renderMessages();

  const messages = [...history, user].map((m) => {
    const out = { role: m.role, content: m.content || '' };
    if (m.images) out.images = m.images;
    if (m.tool_calls) out.tool_calls = m.tool_calls;
    return out;
  });
  if (conv.system.trim()) messages.unshift({ role: 'system', content: conv.system });
  const body = { model, messages, stream: true };
  if (Object.keys(conv.options).length) body.options = conv.options;
  const think = thinkValue(conv.think);
  if (think !== undefined) body.think = think;
  try {
    const r = await request('/api/chat', { method: 'POST', body, signal: controller.signal });
    for await (const chunk of ndjson(r)) {
      const m = chunk.message;
      if (m) {
        reply.content += m.content || '';
        reply.thinking += m.thinking || '';
        if (m.tool_calls) reply.tool_calls = [...(reply.tool_calls || []), ...m.tool_calls];
      }
      if (chunk.done) {
        reply.stats = {};
        for (const k of ['prompt_eval_count', 'eval_count', 'eval_duration', 'total_duration', 'done_reason']) reply.stats[k] = chunk[k];
      }
      scheduleRender(reply);
    }
  } catch (e) {
    if (e.name === 'AbortError') reply.stopped = true;
    else reply.error = e.message || String(e);
  } finally {
    controller = null;
    clearTimeout(renderPending);
    renderPending = 0;
    if (!reply.thinking) delete reply.thinking;
    conv.updated = Date.now();
    save();
    setBusy(false);
    const el = $('messages').lastElementChild;
    if (el && el.classList.contains('message')) fillMessage(el, reply, false);
  }
}

function stop() {
  if (controller) controller.abort();
}

// --- attachments ---

function renderAttachments() {
  const box = clear($('attachments'));
  attachments.forEach((a, i) => {
    box.append(h('span', { class: 'attachment' }, h('img', { src: a.dataUrl, alt: a.name }),
      h('button', { type: 'button', class: 'icon', title: 'Remove', onclick: () => { attachments.splice(i, 1); renderAttachments(); } }, '×')));
  });
}

function attach(files) {
  for (const file of files) {
    if (!file.type.startsWith('image/')) { banner(`${file.name} is not an image`); continue; }
    const reader = new FileReader();
    reader.onload = () => { attachments.push({ name: file.name, dataUrl: String(reader.result) }); renderAttachments(); };
    reader.readAsDataURL(file);
  }
}

// --- models ---

function renderCaps() {
  const m = models.find((x) => x.name === $('chat-model').value);
  const caps = m?.capabilities || [];
  append(clear($('chat-model-caps')), caps.map((c) => h('span', { class: 'cap' }, c)));
}

async function loadModels() {
  const names = new Map();
  try {
    for (const m of (await getJSON('/api/tags')).models || []) names.set(m.name, { name: m.name, capabilities: m.capabilities || [] });
  } catch (e) {
    if (e.status === 401) return;
  }
  try {
    for (const m of (await getJSON('/api/ps')).models || []) if (!names.has(m.name)) names.set(m.name, { name: m.name, capabilities: [] });
  } catch { /* the list of installed models is enough */ }
  models = [...names.values()].filter((m) => !m.capabilities.length || m.capabilities.includes('completion'));
  const select = $('chat-model');
  const wanted = current()?.model || select.value || localStorage.getItem(LAST_MODEL) || '';
  append(clear(select), models.length ? models.map((m) => h('option', { value: m.name }, m.name))
    : [h('option', { value: '' }, 'no models installed')]);
  if (models.some((m) => m.name === wanted)) select.value = wanted;
  renderCaps();
}

// --- the page ---

export function init() {
  load();
  currentId = conversations[0]?.id ?? null;
  $('composer').addEventListener('submit', (e) => { e.preventDefault(); send(); });
  $('prompt').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
  });
  $('stop').addEventListener('click', stop);
  $('new-chat').addEventListener('click', () => { if (!controller) { create(); save(); select(currentId); $('prompt').focus(); } });
  $('attach').addEventListener('change', (e) => { attach(e.target.files); e.target.value = ''; });
  $('chat-model').addEventListener('change', () => {
    localStorage.setItem(LAST_MODEL, $('chat-model').value);
    renderCaps();
  });
  $('toggle-options').addEventListener('click', () => {
    const panel = $('options');
    panel.hidden = !panel.hidden;
    $('toggle-options').setAttribute('aria-expanded', String(!panel.hidden));
  });
  for (const id of ['opt-system', ...OPTION_FIELDS.map((f) => `opt-${f}`), 'opt-think']) {
    $(id).addEventListener('change', () => { const conv = current(); if (conv) { readOptions(conv); save(); } });
  }
  $('export-chat').addEventListener('click', () => {
    const conv = current();
    if (conv) download(`${conv.title.replace(/[^\w.-]+/g, '_').slice(0, 60) || 'conversation'}.json`, conv);
  });
  $('export-all').addEventListener('click', () => download('a3s-power-conversations.json', { conversations }));
  window.addEventListener('storage', (e) => { if (e.key === STORE && !controller) { load(); renderList(); renderMessages(); } });
  fillOptions(current());
  renderList();
  renderMessages();
}

export function show() {
  loadModels();
}
