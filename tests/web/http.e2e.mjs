// End-to-end test of sockit http's folder listing in headless Chromium, run by tests/http.rs:
//
//   node tests/web/http.e2e.mjs BASE_URL SHOT_DIR SPEC_JSON
//
// SPEC_JSON says what the served folder holds: {"root": [names], "folder": "sub",
// "inside": [names]} (folders named with their trailing slash). On a desktop-sized page the
// listing of / must show every root entry; a click on the folder's link must navigate to the
// folder's own listing (the URL and the entries change), and its parent link must lead back. On
// a 390x844 phone page both listings must fit the screen's width (no horizontal scroll). The page
// must run without errors (it has no script; its policy allows only its inline style).
// Screenshots go to SHOT_DIR. Every wait is bounded; any failure exits non-zero.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const [baseUrl, shotDir, specJson] = process.argv.slice(2);
if (!baseUrl || !shotDir || !specJson) {
  console.error('usage: node http.e2e.mjs BASE_URL SHOT_DIR SPEC_JSON');
  process.exit(2);
}
const spec = JSON.parse(specJson);
const WAIT = 10000;
const PHONE = { width: 390, height: 844 };
const started = Date.now();

function log(msg) {
  console.log(`[e2e +${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
}

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

// The entry names the listing shows (the text of each name link, parent link included).
const shownNames = (page) => page.$$eval('tbody td.n a', (as) => as.map((a) => a.textContent));

// Every expected name is in the listing and visible on screen (not hidden or clipped to nothing).
async function expectEntries(page, names, where) {
  const shown = await shownNames(page);
  for (const name of names) {
    assert(shown.includes(name), `${where}: ${name} not listed (listed: ${JSON.stringify(shown)})`);
    const link = page.locator('tbody td.n a', { hasText: name }).first();
    assert(await link.isVisible(), `${where}: ${name} is listed but not visible`);
    const box = await link.boundingBox();
    assert(box && box.width > 0 && box.height > 0, `${where}: ${name} has no size on screen`);
  }
}

// How far the page is wider than its window (> 0 means a horizontal scroll bar).
const overflow = (page) =>
  page.evaluate(() => ({
    scrollWidth: document.documentElement.scrollWidth,
    bodyScrollWidth: document.body.scrollWidth,
    innerWidth: window.innerWidth,
  }));

async function expectFits(page, where) {
  const o = await overflow(page);
  log(`${where}: scrollWidth ${o.scrollWidth} (body ${o.bodyScrollWidth}) at ${o.innerWidth} px`);
  assert(o.innerWidth === PHONE.width, `${where}: the window is ${o.innerWidth} px, not ${PHONE.width}`);
  assert(
    o.scrollWidth <= PHONE.width && o.bodyScrollWidth <= PHONE.width,
    `${where}: the page is ${o.scrollWidth} px wide on a ${PHONE.width} px screen`,
  );
  // Every name link ends inside the screen, as does the size column.
  const rightmost = await page.$$eval('tbody td.n a, tbody td.s', (els) =>
    Math.max(...els.map((e) => e.getBoundingClientRect().right)),
  );
  assert(rightmost <= PHONE.width, `${where}: an entry reaches ${rightmost} px on a ${PHONE.width} px screen`);
}

const root = new URL('/', baseUrl).href;
const folderUrl = new URL(`/${encodeURIComponent(spec.folder.replace(/\/$/, ''))}/`, baseUrl).href;

const profile = mkdtempSync(join(tmpdir(), 'sockit-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1100, height: 720 },
    timeout: 30000,
  });
  context.setDefaultTimeout(WAIT);
  const errors = [];
  const watch = (p) => {
    p.on('pageerror', (e) => errors.push(String(e)));
    p.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });
  };

  // Desktop: the root listing, a click into the folder, the parent link back.
  const desk = await context.newPage();
  watch(desk);
  const res = await desk.goto(root);
  assert(res && res.status() === 200, `GET / answered ${res && res.status()}`);
  assert((await desk.title()) === 'Index of /', `title is ${await desk.title()}`);
  await expectEntries(desk, spec.root, '/');
  assert(!(await shownNames(desk)).includes('../'), '/ has a parent link');
  log(`/ lists ${spec.root.length} entries, all visible`);
  await desk.screenshot({ path: join(shotDir, 'http-listing.png') });

  const before = await shownNames(desk);
  await desk.locator('tbody td.n a.dir', { hasText: spec.folder }).first().click();
  await desk.waitForURL(folderUrl, { timeout: WAIT });
  await desk.locator('h1', { hasText: `Index of /${spec.folder}` }).waitFor();
  await expectEntries(desk, ['../', ...spec.inside], spec.folder);
  const after = await shownNames(desk);
  assert(JSON.stringify(after) !== JSON.stringify(before), 'the entries did not change after the click');
  for (const name of spec.root) {
    if (!spec.inside.includes(name)) assert(!after.includes(name), `${name} of / still shown in ${spec.folder}`);
  }
  log(`a click on ${spec.folder} navigated to ${desk.url()}`);

  await desk.locator('tbody td.n a', { hasText: '../' }).click();
  await desk.waitForURL(root, { timeout: WAIT });
  await desk.locator('h1', { hasText: /^Index of \/$/ }).waitFor();
  await expectEntries(desk, spec.root, '/ (back)');
  log('the parent link led back to /');

  // A phone: both listings fit 390 px; the folder link still navigates.
  const phone = await context.newPage();
  watch(phone);
  await phone.setViewportSize(PHONE);
  await phone.goto(root);
  await expectEntries(phone, spec.root, '/ on a phone');
  await expectFits(phone, '/ on a phone');
  await phone.screenshot({ path: join(shotDir, 'http-listing-phone.png'), fullPage: true });
  await phone.locator('tbody td.n a.dir', { hasText: spec.folder }).first().click();
  await phone.waitForURL(folderUrl, { timeout: WAIT });
  await expectEntries(phone, ['../', ...spec.inside], `${spec.folder} on a phone`);
  await expectFits(phone, `${spec.folder} on a phone`);
  await phone.screenshot({ path: join(shotDir, 'http-listing-phone-folder.png'), fullPage: true });
  log(`both listings fit ${PHONE.width} px`);

  assert(errors.length === 0, `page errors: ${errors.join('; ')}`);
  log('all checks passed');
} catch (e) {
  console.error(`[e2e] FAILED: ${e.stack || e}`);
  try {
    if (context) {
      const pages = context.pages();
      const last = pages[pages.length - 1];
      if (last) await last.screenshot({ path: join(shotDir, 'http-listing-failure.png') });
    }
  } catch (_) {
    /* best effort */
  }
  process.exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
