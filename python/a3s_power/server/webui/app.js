// The page's entry: the three pages behind #chat, #models and #usage, and the API key dialog.

import { $, getJSON, getKey, setKey, onAuthNeeded, banner } from './api.js';
import * as chat from './chat.js';
import * as models from './models.js';
import * as usage from './usage.js';

const PAGES = { chat, models, usage };
let active = null;

function route() {
  const name = (location.hash || '#chat').slice(1);
  const page = PAGES[name] ? name : 'chat';
  if (active === page) return;
  if (active && PAGES[active].hide) PAGES[active].hide();
  active = page;
  for (const key of Object.keys(PAGES)) {
    $(`page-${key}`).hidden = key !== page;
    $(`nav-${key}`).classList.toggle('active', key === page);
  }
  document.body.dataset.page = page;
  PAGES[page].show();
}

function openKeyDialog(reason) {
  const dialog = $('key-dialog');
  $('key-input').value = getKey();
  if (reason) $('key-reason').textContent = `The server asks for an API key: ${reason}`;
  if (!dialog.open) dialog.showModal();
  $('key-input').focus();
}

function keyState() {
  $('key-button').textContent = getKey() ? 'API key ✓' : 'API key';
}

async function version() {
  try {
    const health = await getJSON('/health');
    $('server-version').textContent = `v${health.version}`;
  } catch { /* shown when the key is given */ }
}

function init() {
  $('key-button').addEventListener('click', () => openKeyDialog());
  $('key-form').addEventListener('submit', (e) => {
    e.preventDefault();
    setKey($('key-input').value.trim());
    $('key-dialog').close();
    keyState();
    banner('');
    const page = active;
    active = null;
    location.hash = `#${page}`;
    route();
    version();
  });
  $('key-cancel').addEventListener('click', () => $('key-dialog').close());
  $('key-clear').addEventListener('click', () => { $('key-input').value = ''; setKey(''); keyState(); });
  onAuthNeeded((message) => openKeyDialog(message));
  for (const page of Object.values(PAGES)) page.init();
  keyState();
  window.addEventListener('hashchange', route);
  route();
  version();
  document.body.dataset.ready = 'true';
}

init();
