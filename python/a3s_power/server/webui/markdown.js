// Markdown for a model's answers, and a small code highlighter. A model's output is untrusted: it is
// turned into DOM nodes whose text is set as text, never parsed as HTML, so no tag or attribute in it
// can run. Links keep only http(s) and mailto targets and open in a new tab without a referrer;
// images are shown as links, not loaded (the page fetches nothing from another origin).

import { h } from './api.js';

const SAFE_SCHEMES = new Set(['http:', 'https:', 'mailto:']);

export function safeUrl(raw) {
  if (!/^(https?:\/\/|mailto:)/i.test(raw)) return null;
  try {
    const u = new URL(raw);
    return SAFE_SCHEMES.has(u.protocol) ? u.href : null;
  } catch {
    return null;
  }
}

// Renders `text` as Markdown into `target`, replacing what it held.
export function renderMarkdown(text, target) {
  const frag = document.createDocumentFragment();
  blocks(String(text).replace(/\r\n?/g, '\n').split('\n'), frag);
  target.replaceChildren(frag);
}

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:\s+(.*?))?\s*#*\s*$/;
const HR = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
const QUOTE = /^ {0,3}>\s?/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])(\s+|$)(.*)$/;
const TABLE_RULE = /^\s*\|?\s*:?-{1,}:?\s*(\|\s*:?-{1,}:?\s*)*\|?\s*$/;

function indentOf(line) {
  return line.length - line.trimStart().length;
}

function startsBlock(line, next) {
  return FENCE.test(line) || HEADING.test(line) || HR.test(line) || QUOTE.test(line) || ITEM.test(line)
    || (line.includes('|') && next !== undefined && TABLE_RULE.test(next) && next.includes('-'));
}

function blocks(lines, parent) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) { i += 1; continue; }
    let m = FENCE.exec(line);
    if (m) {
      const close = new RegExp(`^ {0,3}${m[1][0] === '`' ? '`' : '~'}{${m[1].length},}\\s*$`);
      const body = [];
      i += 1;
      while (i < lines.length && !close.test(lines[i])) { body.push(lines[i]); i += 1; }
      i += 1; // the closing fence, or past the end while the answer is still streaming
      parent.append(codeBlock(body.join('\n'), m[2]));
      continue;
    }
    if ((m = HEADING.exec(line))) {
      parent.append(inline(h(`h${m[1].length}`), m[2] || ''));
      i += 1;
      continue;
    }
    if (HR.test(line)) { parent.append(h('hr')); i += 1; continue; }
    if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && QUOTE.test(lines[i])) { inner.push(lines[i].replace(QUOTE, '')); i += 1; }
      const quote = h('blockquote');
      blocks(inner, quote);
      parent.append(quote);
      continue;
    }
    if (ITEM.test(line)) { i = list(lines, i, parent); continue; }
    if (line.includes('|') && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1]) && lines[i + 1].includes('-')) {
      i = table(lines, i, parent);
      continue;
    }
    const para = [line.trim()];
    i += 1;
    while (i < lines.length && lines[i].trim() && !startsBlock(lines[i], lines[i + 1])) {
      para.push(lines[i].trim());
      i += 1;
    }
    parent.append(inline(h('p'), para.join('\n')));
  }
}

function list(lines, i, parent) {
  const first = ITEM.exec(lines[i]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const el = h(ordered ? 'ol' : 'ul');
  if (ordered && parseInt(first[2], 10) !== 1) el.setAttribute('start', String(parseInt(first[2], 10)));
  const items = [];
  let item = null;
  while (i < lines.length) {
    const line = lines[i];
    const m = ITEM.exec(line);
    if (m && m[1].length <= indent + 1) {
      if (/\d/.test(m[2]) !== ordered) break;
      item = { lines: [m[4]], contentIndent: m[1].length + m[2].length + 1 };
      items.push(item);
      i += 1;
      continue;
    }
    if (!line.trim()) {
      let j = i + 1;
      while (j < lines.length && !lines[j].trim()) j += 1;
      if (j < lines.length && indentOf(lines[j]) > indent) { item.lines.push(''); i += 1; continue; }
      break;
    }
    if (indentOf(line) > indent) {
      item.lines.push(line.slice(Math.min(indentOf(line), item.contentIndent)));
      i += 1;
      continue;
    }
    if (startsBlock(line, lines[i + 1])) break;
    item.lines.push(line.trim()); // a lazy continuation of the item's paragraph
    i += 1;
  }
  for (const it of items) {
    const li = h('li');
    blocks(it.lines, li);
    if (li.childNodes.length === 1 && li.firstChild.nodeName === 'P') li.replaceChildren(...li.firstChild.childNodes);
    el.append(li);
  }
  parent.append(el);
  return i;
}

function cells(line) {
  let s = line.trim();
  if (s.startsWith('|')) s = s.slice(1);
  if (s.endsWith('|') && !s.endsWith('\\|')) s = s.slice(0, -1);
  return s.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, '|'));
}

function table(lines, i, parent) {
  const head = cells(lines[i]);
  const aligns = cells(lines[i + 1]).map((c) => (c.endsWith(':') ? (c.startsWith(':') ? 'center' : 'right') : 'left'));
  const row = (values, tag) => h('tr', null, head.map((_, k) => {
    const cell = inline(h(tag), values[k] || '');
    cell.className = 'align-' + (aligns[k] || 'left');
    return cell;
  }));
  const tbody = h('tbody');
  i += 2;
  while (i < lines.length && lines[i].trim() && lines[i].includes('|')) { tbody.append(row(cells(lines[i]), 'td')); i += 1; }
  parent.append(h('div', { class: 'table-wrap' }, h('table', null, h('thead', null, row(head, 'th')), tbody)));
  return i;
}

// Inline spans, earliest match first; at the same place, the first kind listed wins.
const INLINE = [
  ['code', /(`+)(?!`)([\s\S]*?[^`])\1(?!`)/g],
  ['escape', /\\([!-/:-@[-`{-~])/g],
  ['image', /!\[([^\]\n]*)\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"\n]*")?\s*\)/g],
  ['link', /\[([^\]\n]+)\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"\n]*")?\s*\)/g],
  ['autolink', /<((?:https?:\/\/|mailto:)[^\s<>]+)>/g],
  ['url', /\bhttps?:\/\/[^\s<>]*[^\s<>.,;:!?'")\]*_~]/g],
  ['strong', /\*\*(?=\S)([\s\S]*?\S)\*\*|\b__(?=\S)([\s\S]*?\S)__\b/g],
  ['del', /~~(?=\S)([\s\S]*?\S)~~/g],
  ['em', /\*(?=[^\s*])([\s\S]*?[^\s*])\*|\b_(?=[^\s_])([\s\S]*?[^\s_])_\b/g],
  ['br', / {2,}\n|\\\n|\n/g],
];

function inline(parent, text) {
  let pos = 0;
  while (pos < text.length) {
    let best = null;
    for (const [kind, re] of INLINE) {
      re.lastIndex = pos;
      const m = re.exec(text);
      if (m && (!best || m.index < best.m.index)) best = { kind, m };
    }
    if (!best) break;
    if (best.m.index > pos) parent.append(text.slice(pos, best.m.index));
    parent.append(span(best.kind, best.m));
    pos = best.m.index + best.m[0].length;
  }
  if (pos < text.length) parent.append(text.slice(pos));
  return parent;
}

function link(href, children) {
  return h('a', { href, target: '_blank', rel: 'noopener noreferrer nofollow' }, children);
}

function span(kind, m) {
  switch (kind) {
    case 'code': return h('code', null, m[2].length > 2 && m[2].startsWith(' ') && m[2].endsWith(' ') ? m[2].slice(1, -1) : m[2]);
    case 'escape': return document.createTextNode(m[1]);
    case 'image': {
      const href = safeUrl(m[2]);
      const label = `[image${m[1] ? ': ' + m[1] : ''}]`;
      return href ? link(href, label) : document.createTextNode(label);
    }
    case 'link': {
      const href = safeUrl(m[2]);
      return href ? inline(link(href), m[1]) : document.createTextNode(m[0]);
    }
    case 'autolink':
    case 'url': {
      const raw = kind === 'url' ? m[0] : m[1];
      const href = safeUrl(raw);
      return href ? link(href, raw) : document.createTextNode(m[0]);
    }
    case 'strong': return inline(h('strong'), m[1] ?? m[2]);
    case 'del': return inline(h('del'), m[1]);
    case 'em': return inline(h('em'), m[1] ?? m[2]);
    default: return h('br');
  }
}

function codeBlock(code, lang) {
  const label = (lang || '').toLowerCase().replace(/[^a-z0-9+#_.-]/g, '').slice(0, 20);
  const copy = h('button', { type: 'button', class: 'copy', title: 'Copy the code' }, 'Copy');
  copy.addEventListener('click', () => copyText(code, copy));
  return h('div', { class: 'code-block' },
    h('div', { class: 'code-head' }, h('span', null, label || 'text'), copy),
    h('pre', null, h('code', { class: label ? 'lang-' + label : null }, highlight(code, label))));
}

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = 'Copied';
  } catch {
    button.textContent = 'Select and copy';
  }
  setTimeout(() => { button.textContent = 'Copy'; }, 1500);
}

// --- the highlighter: comments, strings, numbers, keywords and called names, by language family ---

const WORDS = {
  python: `False None True and as assert async await break case class continue def del elif else except finally for
    from global if import in is lambda match nonlocal not or pass raise return self try while with yield`,
  js: `as async await break case catch class const continue debugger default delete do else enum export extends false
    finally for from function if implements import in instanceof interface let new null of private protected public
    return static super switch this throw true try type typeof undefined var void while with yield`,
  c: `auto bool break case catch char class const constexpr continue default define delete do double else enum explicit
    extern false final float for friend goto if include inline int long namespace new noexcept nullptr operator override
    private protected public return short signed sizeof static struct switch template this throw true try typedef
    typename union unsigned using virtual void volatile while abstract boolean byte extends final implements import
    instanceof interface package super synchronized throws var string`,
  go: `break case chan const continue default defer else fallthrough false for func go goto if import interface map nil
    package range return select struct switch true type var`,
  rust: `as async await break const continue crate dyn else enum extern false fn for if impl in let loop match mod move
    mut pub ref return self Self static struct super trait true type unsafe use where while`,
  sh: `if then else elif fi for while until do done case esac in function return export local echo exit set unset
    readonly shift source alias cd sudo`,
  sql: `select from where insert into values update set delete create table drop alter add index join left right inner
    outer on group by order having limit offset as and or not null is in like between distinct union all primary key
    foreign references default count sum avg min max`,
  yaml: 'true false null yes no on off',
  json: 'true false null',
};

const FAMILIES = {
  python: 'python', py: 'python', ruby: 'python', rb: 'python',
  javascript: 'js', js: 'js', mjs: 'js', ts: 'js', typescript: 'js', jsx: 'js', tsx: 'js',
  c: 'c', h: 'c', cpp: 'c', 'c++': 'c', cc: 'c', cxx: 'c', hpp: 'c', cs: 'c', csharp: 'c', java: 'c', kotlin: 'c',
  kt: 'c', swift: 'c', php: 'c', cuda: 'c', go: 'go', golang: 'go', rust: 'rust', rs: 'rust',
  sh: 'sh', bash: 'sh', shell: 'sh', zsh: 'sh', console: 'sh', dockerfile: 'sh', makefile: 'sh', make: 'sh',
  sql: 'sql', yaml: 'yaml', yml: 'yaml', toml: 'yaml', ini: 'yaml', json: 'json', jsonc: 'json',
};

const COMMENT = {
  hash: String.raw`#.*`,
  slash: String.raw`\/\/.*|\/\*[\s\S]*?(?:\*\/|$)`,
  sql: String.raw`--.*|\/\*[\s\S]*?(?:\*\/|$)`,
};
const STRINGS = {
  python: String.raw`"""[\s\S]*?(?:"""|$)|'''[\s\S]*?(?:'''|$)|[rbfuRBFU]{0,2}"(?:\\.|[^"\\\n])*"|[rbfuRBFU]{0,2}'(?:\\.|[^'\\\n])*'`,
  js: String.raw`"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'|\x60(?:\\[\s\S]|[^\x60\\])*\x60`,
  plain: String.raw`"(?:\\.|[^"\\\n])*"|'(?:\\.|[^'\\\n])*'`,
  dq: String.raw`"(?:\\.|[^"\\\n])*"`,
};

const GRAMMARS = {};

function grammar(family) {
  if (GRAMMARS[family]) return GRAMMARS[family];
  const comment = { python: COMMENT.hash, sh: COMMENT.hash, yaml: COMMENT.hash, sql: COMMENT.sql, json: null }[family]
    ?? (family === 'generic' ? `${COMMENT.slash}|(?<=^|\\s)${COMMENT.hash}` : COMMENT.slash);
  const strings = { python: STRINGS.python, js: STRINGS.js, go: STRINGS.js, json: STRINGS.dq, rust: STRINGS.dq }[family]
    ?? (family === 'generic' ? STRINGS.js : STRINGS.plain);
  const parts = [];
  if (comment) parts.push(`(?<comment>${comment})`);
  parts.push(`(?<string>${strings})`);
  if (family === 'sh') parts.push(String.raw`(?<variable>\$\{[^}\n]*\}|\$[A-Za-z_][\w]*|\$[0-9@#?*!$-])`);
  if (family === 'python') parts.push(String.raw`(?<meta>@[A-Za-z_][\w.]*)`);
  if (family === 'c' || family === 'generic') parts.push(String.raw`(?<meta>^\s*#\s*\w+)`);
  parts.push(String.raw`(?<number>\b(?:0[xX][\da-fA-F_]+|0[bB][01_]+|\d[\d_]*(?:\.\d+)?(?:[eE][+-]?\d+)?)\b)`);
  parts.push(String.raw`(?<word>[A-Za-z_$][\w$]*)`);
  const words = family === 'generic'
    ? new Set([...WORDS.python.split(/\s+/), ...WORDS.js.split(/\s+/), ...WORDS.c.split(/\s+/)])
    : new Set((WORDS[family] || '').split(/\s+/).filter(Boolean));
  GRAMMARS[family] = { re: new RegExp(parts.join('|'), 'gm'), words, nocase: family === 'sql' };
  return GRAMMARS[family];
}

export function highlight(code, lang) {
  const frag = document.createDocumentFragment();
  const key = (lang || '').toLowerCase();
  if (['text', 'txt', 'plain', 'plaintext', 'output', 'log', 'markdown', 'md'].includes(key)) {
    frag.append(code);
    return frag;
  }
  const g = grammar(FAMILIES[key] || 'generic');
  g.re.lastIndex = 0;
  let pos = 0;
  let m;
  while ((m = g.re.exec(code)) !== null) {
    if (m[0] === '') { g.re.lastIndex += 1; continue; }
    const kind = Object.keys(m.groups).find((k) => m.groups[k] !== undefined);
    let cls = kind;
    if (kind === 'word') {
      const w = g.nocase ? m[0].toLowerCase() : m[0];
      if (g.words.has(w)) cls = 'keyword';
      else if (/^\s*\(/.test(code.slice(g.re.lastIndex, g.re.lastIndex + 20))) cls = 'function';
      else cls = null;
    }
    if (m.index > pos) frag.append(code.slice(pos, m.index));
    frag.append(cls ? h('span', { class: 'tok-' + cls }, m[0]) : m[0]);
    pos = m.index + m[0].length;
  }
  if (pos < code.length) frag.append(code.slice(pos));
  return frag;
}
