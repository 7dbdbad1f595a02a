// Two chat pages in headless Debian chromium (playwright-core), in one room, through a TCP
// proxy the Rust test controls; then the proxy cuts every connection and holds new ones while
// messages are published straight to the server, and lets them through again.
//
//   node tests/js/chat_page.mjs PAGE_BASE SERVER_BASE CONTROL_BASE [--timeout MS]
//
// PAGE_BASE is the proxy (what the browser loads), SERVER_BASE the chat server itself (for
// publishing while the proxy holds connections), CONTROL_BASE serves POST /cut and /resume.
//
// Page contract (examples/chat.rs): `#create` makes a room and shows its id in `#room`;
// `?room=ID&user=NAME` joins; `#text` + `#send` posts; `#messages li.msg[data-id][data-text]`
// one per received message; `#status` is "open" while the room stream is; `#login` opens the
// direct-message stream (`#dm-status`), `#dm-to` + `#dm-text` + `#dm-send` send one, received
// ones are `#dms li.dm[data-text]`; `#status[data-opens]` counts the room stream's opens.
//
// Prints one JSON line {"a": [texts], "b": [texts], "a_opens", "b_opens", "dm": [texts],
// "ids": {id: count over both pages}, "encodings": {content-encoding: event streams}} and exits 0; on failure prints the pages and console to
// stderr and exits 1. Two browser contexts, so each page has its own login cookie.
import { chromium } from 'playwright-core';
import { parseArgs } from 'node:util';

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: { timeout: { type: 'string', default: '20000' } },
});
const [pageBase, serverBase, controlBase] = positionals;
if (!controlBase) {
  console.error('usage: chat_page.mjs PAGE_BASE SERVER_BASE CONTROL_BASE [--timeout MS]');
  process.exit(2);
}
const timeout = Number(opts.timeout);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

const watchdog = setTimeout(() => {
  console.error(`chat_page: watchdog fired after ${4 * timeout + 30000} ms`);
  process.exit(1);
}, 4 * timeout + 30000);
watchdog.unref();

const log = [];
const encodings = {};
const step = (s) => log.push(`step: ${s}`);
let browser;
let pages = [];
let exitCode = 1;

async function postJson(url, body) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body ?? {}),
  });
  if (!res.ok) throw new Error(`${url}: HTTP ${res.status} ${await res.text()}`);
  return res.text();
}

const texts = (page) =>
  page.evaluate(() =>
    Array.from(document.querySelectorAll('#messages li.msg')).map((li) => li.dataset.text),
  );

const waitText = (page, selector, text) =>
  page.waitForFunction(
    ([sel, t]) => Array.from(document.querySelectorAll(sel)).some((li) => li.dataset.text === t),
    [selector, text],
    { timeout, polling: 50 },
  );

const waitStatus = (page, id, want, equal = true) =>
  page.waitForFunction(
    ([i, w, eq]) => (document.getElementById(i)?.textContent === w) === eq,
    [id, want, equal],
    { timeout, polling: 50 },
  );

try {
  browser = await chromium.launch({
    executablePath,
    headless: true,
    timeout: 30000,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
  });
  const open = async (name) => {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.on('console', (m) => log.push(`${name} console.${m.type()}: ${m.text()}`));
    page.on('pageerror', (e) => log.push(`${name} pageerror: ${e.message}`));
    // The Content-Encoding of every event stream the page opened (the chat compresses them).
    page.on('response', (r) => {
      const headers = r.headers();
      if ((headers['content-type'] || '').startsWith('text/event-stream')) {
        const encoding = headers['content-encoding'] || 'identity';
        encodings[encoding] = (encodings[encoding] || 0) + 1;
      }
    });
    page.on('requestfailed', (r) => log.push(`${name} requestfailed: ${r.url()} ${r.failure()?.errorText ?? ''}`));
    pages.push([name, page]);
    return page;
  };

  step('page a creates a room');
  const a = await open('a');
  await a.goto(`${pageBase}/?user=alice`, { waitUntil: 'domcontentloaded', timeout });
  await a.click('#create');
  await waitStatus(a, 'status', 'open');
  const room = (await a.textContent('#room')).trim();

  step(`page b joins room ${room}`);
  const b = await open('b');
  await b.goto(`${pageBase}/?user=bob&room=${encodeURIComponent(room)}`, { waitUntil: 'domcontentloaded', timeout });
  await waitStatus(b, 'status', 'open');

  step('a sends, b sees it');
  await a.fill('#text', 'hello from alice');
  await a.click('#send');
  await waitText(b, '#messages li.msg', 'hello from alice');
  await waitText(a, '#messages li.msg', 'hello from alice');

  step('both log in; b sends a direct message to alice');
  await a.click('#login');
  await b.click('#login');
  await waitStatus(a, 'dm-status', 'open');
  await waitStatus(b, 'dm-status', 'open');
  await b.fill('#dm-to', 'alice');
  await b.fill('#dm-text', 'psst');
  await b.click('#dm-send');
  await waitText(a, '#dms li.dm', 'psst');

  step('the proxy cuts every connection and holds new ones');
  await postJson(`${controlBase}/cut`);
  await waitStatus(a, 'status', 'open', false);
  await waitStatus(b, 'status', 'open', false);

  step('messages published while the pages are cut off');
  for (const text of ['missed 1', 'missed 2', 'missed 3']) {
    await postJson(`${serverBase}/rooms/${room}/messages`, { user: 'carol', text });
  }

  step('the proxy lets connections through again');
  await postJson(`${controlBase}/resume`);
  await postJson(`${serverBase}/rooms/${room}/messages`, { user: 'carol', text: 'after' });
  // Events arrive in order: once "after" is there, everything before it is too.
  await waitText(a, '#messages li.msg', 'after');
  await waitText(b, '#messages li.msg', 'after');
  await waitStatus(a, 'status', 'open');
  await waitStatus(b, 'status', 'open');

  const ids = {};
  for (const page of [a, b]) {
    const pageIds = await page.evaluate(() =>
      Array.from(document.querySelectorAll('#messages li.msg')).map((li) => li.dataset.id),
    );
    for (const id of pageIds) ids[id] = (ids[id] ?? 0) + 1;
  }
  const opens = (page) =>
    page.evaluate(() => Number(document.getElementById('status').dataset.opens ?? 0));
  // A room that does not exist: the page says so and stops instead of retrying forever.
  const c = await open('c');
  await c.goto(`${pageBase}/?user=carol&room=no-such-room`, { waitUntil: 'domcontentloaded', timeout });
  await waitStatus(c, 'status', 'not found');
  await new Promise((r) => setTimeout(r, 1500));
  const unknownRoom = await c.evaluate(() => ({
    status: document.getElementById('status').textContent,
    opens: Number(document.getElementById('status').dataset.opens ?? 0),
  }));
  const dm = await a.evaluate(() =>
    Array.from(document.querySelectorAll('#dms li.dm')).map((li) => li.dataset.text),
  );
  process.stdout.write(
    JSON.stringify({
      room,
      a: await texts(a),
      b: await texts(b),
      a_opens: await opens(a),
      b_opens: await opens(b),
      dm,
      ids,
      unknown_room: unknownRoom,
      encodings,
    }) + '\n',
  );
  exitCode = 0;
} catch (e) {
  console.error(`chat_page: ${e.stack || e}`);
  for (const [name, page] of pages) {
    try {
      console.error(`--- page ${name}: messages ${JSON.stringify(await texts(page))}`);
      console.error(await page.content());
    } catch (e2) {
      console.error(`(could not read page ${name}: ${e2.message})`);
    }
  }
} finally {
  console.error(log.join('\n'));
  try {
    await browser?.close();
  } catch {}
}
process.exit(exitCode);
