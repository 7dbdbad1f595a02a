// Drive the mercure example's debugging page in headless Debian chromium
// (playwright-core): subscribe with its form, publish a private update and then
// a public one with its form, and report what the page shows.
//
//   node tests/js/mercure_page.mjs URL TOKEN [--timeout MS]
//
// TOKEN may publish to the page's default topic. On success prints one JSON
// line {"published": ["<status> <id>", ...], "events": ["<li text>", ...],
// "state": "..."} and exits 0; on failure prints the page, console and errors
// to stderr and exits 1. The browser is $CHROMIUM or /usr/bin/chromium; no
// browser is ever downloaded.
import { chromium } from 'playwright-core';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: { timeout: { type: 'string', default: '15000' } },
});
const [url, token] = positionals;
if (!url || !token) {
  console.error('usage: mercure_page.mjs URL TOKEN [--timeout MS]');
  process.exit(2);
}
const timeout = Number(opts.timeout);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';

const watchdog = setTimeout(() => {
  console.error(`mercure_page: watchdog fired after ${timeout + 30000} ms`);
  process.exit(1);
}, timeout + 30000);
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
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-dev-shm-usage'],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => consoleLines.push(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
  const text = (selector) => page.locator(selector).textContent();
  const published = [];
  const publish = async (data, isPrivate) => {
    await page.fill('#data', data);
    await page.setChecked('#private', isPrivate);
    const before = await text('#published');
    await page.click('#publish');
    await page.waitForFunction((b) => document.getElementById('published').textContent !== b, before, {
      timeout,
    });
    published.push(await text('#published'));
  };
  try {
    await page.goto(url, { waitUntil: 'domcontentloaded', timeout });
    await page.click('#subscribe');
    await page.waitForFunction(() => document.getElementById('state').textContent === 'open', null, {
      timeout,
    });
    await page.fill('#token', token);
    await publish('secret', true);
    await publish('hello\nworld', false);
    await page.waitForFunction(() => document.querySelectorAll('#events li').length >= 1, null, {
      timeout,
    });
    const events = await page.locator('#events li').allTextContents();
    const state = await text('#state');
    process.stdout.write(JSON.stringify({ published, events, state }) + '\n');
    exitCode = 0;
  } catch (e) {
    console.error(`mercure_page: ${e.message}`);
    console.error('--- page content ---');
    console.error(await page.content().catch(() => '(none)'));
  }
} catch (e) {
  console.error(`mercure_page: browser error (executablePath=${executablePath}): ${e.stack || e}`);
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
