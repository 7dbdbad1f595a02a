// Open a page in headless Debian chromium (driven by playwright-core) and wait
// until it shows live SSE ticks.
//
//   node tests/js/clock_page.mjs URL [--min N] [--timeout MS] [--screenshot FILE]
//
// Page contract: `<ul id="ticks">` gets one `<li class="tick" data-id="<event
// id>">` per received tick; `<span id="status">` shows open/connecting/error.
//
// On success prints one JSON line {"ticks": N, "ids": [...], "status": "..."}
// and exits 0. On failure prints the page content, console and errors to
// stderr and exits 1. The browser binary is $CHROMIUM or /usr/bin/chromium;
// no browser is ever downloaded.
import { chromium } from 'playwright-core';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    min: { type: 'string', default: '2' },
    timeout: { type: 'string', default: '15000' },
    screenshot: { type: 'string' },
  },
});
const url = positionals[0];
if (!url) {
  console.error('usage: clock_page.mjs URL [--min N] [--timeout MS] [--screenshot FILE]');
  process.exit(2);
}
const minTicks = Number(opts.min);
const timeoutMs = Number(opts.timeout);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

// Hard stop in case launching or closing the browser hangs.
const watchdog = setTimeout(() => {
  console.error(`clock_page: watchdog fired after ${timeoutMs + 30000} ms`);
  process.exit(1);
}, timeoutMs + 30000);
watchdog.unref();

const consoleLines = [];
const userDataDir = await mkdtemp(join(tmpdir(), 'tower-sse-chromium-'));
let context;
let exitCode = 1;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
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
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => consoleLines.push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  page.on('requestfailed', (r) =>
    consoleLines.push(`requestfailed: ${r.url()} ${r.failure()?.errorText ?? ''}`),
  );

  const readTicks = () =>
    page.evaluate(() => ({
      ids: Array.from(document.querySelectorAll('#ticks li.tick')).map(
        (li) => li.getAttribute('data-id'),
      ),
      status: document.getElementById('status')?.textContent?.trim() ?? null,
    }));

  try {
    await page.goto(url, { waitUntil: 'domcontentloaded', timeout: timeoutMs });
    await page.waitForFunction(
      (n) => document.querySelectorAll('#ticks li.tick').length >= n,
      minTicks,
      { timeout: timeoutMs, polling: 50 },
    );
    const { ids, status } = await readTicks();
    process.stdout.write(JSON.stringify({ ticks: ids.length, ids, status }) + '\n');
    if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });
    exitCode = 0;
  } catch (e) {
    console.error(`clock_page: no ${minTicks} ticks at ${url}: ${e.message}`);
    try {
      const { ids, status } = await readTicks();
      console.error(`ticks seen: ${ids.length} ids=${JSON.stringify(ids)} status=${status}`);
      console.error('--- page content ---');
      console.error(await page.content());
      if (opts.screenshot) await page.screenshot({ path: opts.screenshot, fullPage: true });
    } catch (e2) {
      console.error(`(could not read the page: ${e2.message})`);
    }
  }
} catch (e) {
  console.error(`clock_page: browser error (executablePath=${executablePath}): ${e.stack || e}`);
} finally {
  if (consoleLines.length) {
    console.error('--- console ---');
    for (const l of consoleLines) console.error(l);
  }
  try {
    await context?.close();
  } catch {}
  await rm(userDataDir, { recursive: true, force: true }).catch(() => {});
}
process.exit(exitCode);
