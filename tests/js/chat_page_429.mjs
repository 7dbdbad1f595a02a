// A chat page refused with 429 (too many streams from its address) waits for Retry-After and
// connects once a slot is free, instead of giving up as for other 4xx answers.
//
//   node tests/js/chat_page_429.mjs BASE ROOM [--timeout MS]
//
// The server allows one stream per address. This script holds that one stream itself (a
// fetch from the same address), opens the page on ROOM, waits for `#status` to say
// "too many streams: waiting", lets its own stream go, and waits for `#status` "open".
// Prints {"waited": true, "opened": true} and exits 0; on failure prints the page and
// console to stderr and exits 1.
import { chromium } from 'playwright-core';
import { parseArgs } from 'node:util';

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: { timeout: { type: 'string', default: '20000' } },
});
const [base, room] = positionals;
if (!room) {
  console.error('usage: chat_page_429.mjs BASE ROOM [--timeout MS]');
  process.exit(2);
}
const timeout = Number(opts.timeout);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const watchdog = setTimeout(() => {
  console.error('chat_page_429: watchdog fired');
  process.exit(1);
}, 3 * timeout + 30000);
watchdog.unref();

const log = [];
let browser;
let page;
let exitCode = 1;

const waitStatus = (want) =>
  page.waitForFunction((w) => document.getElementById('status')?.textContent === w, want, {
    timeout,
    polling: 50,
  });

try {
  log.push('step: hold the one stream this address may have');
  const held = new AbortController();
  const res = await fetch(`${base}/rooms/${encodeURIComponent(room)}/events`, {
    headers: { Accept: 'text/event-stream' },
    signal: held.signal,
  });
  if (res.status !== 200) throw new Error(`holding stream: HTTP ${res.status}`);
  const reader = res.body.getReader();
  reader.read().catch(() => {});

  browser = await chromium.launch({
    executablePath,
    headless: true,
    timeout: 30000,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-dev-shm-usage'],
  });
  page = await (await browser.newContext()).newPage();
  page.on('console', (m) => log.push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log.push(`pageerror: ${e.message}`));

  log.push('step: the page is refused and waits');
  await page.goto(`${base}/?room=${encodeURIComponent(room)}`, { waitUntil: 'domcontentloaded', timeout });
  await waitStatus('too many streams: waiting');

  log.push('step: the held stream goes; the page connects');
  held.abort();
  await waitStatus('open');
  process.stdout.write(JSON.stringify({ waited: true, opened: true }) + '\n');
  exitCode = 0;
} catch (e) {
  console.error(`chat_page_429: ${e.stack || e}`);
  try {
    console.error(await page?.content());
  } catch {}
} finally {
  console.error(log.join('\n'));
  try {
    await browser?.close();
  } catch {}
}
process.exit(exitCode);
