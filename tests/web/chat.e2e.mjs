// End-to-end test of sockit chat's web page in headless Chromium, run by tests/chat_web.rs:
//
//   node tests/web/chat.e2e.mjs WEB_URL TCP_ADDR SHOT_DIR
//
// Two browser pages and one raw TCP client (the plain line protocol, as nc speaks it) chat in
// #lobby and must all see the same messages in the same order; then the script prints RESTART on
// stdout and waits for RESTARTED on stdin while the Rust test restarts the server on the same
// ports, and the pages must show that they are disconnected, reconnect by themselves, and carry a
// message again. A WebSocket handshake with a foreign Origin must get 403. Screenshots (desktop,
// and a 390x844 phone) go to SHOT_DIR. Every wait is bounded; any failure exits non-zero.

import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const [webUrl, tcpAddr, shotDir] = process.argv.slice(2);
if (!webUrl || !tcpAddr || !shotDir) {
  console.error('usage: node chat.e2e.mjs WEB_URL TCP_ADDR SHOT_DIR');
  process.exit(2);
}
const WAIT = 10000;
const stdinLines = createInterface({ input: process.stdin });
const started = Date.now();

function log(msg) {
  console.log(`[e2e +${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
}

function assert(cond, msg) {
  if (!cond) throw new Error(`assertion failed: ${msg}`);
}

function sameList(a, b, what) {
  assert(JSON.stringify(a) === JSON.stringify(b), `${what}:\n  ${JSON.stringify(a)}\n  ${JSON.stringify(b)}`);
}

async function until(what, check, limit = WAIT) {
  const deadline = Date.now() + limit;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ---- an nc (netcat-openbsd) client speaking the plain line protocol ---------------------------

function tcpClient(addr) {
  const i = addr.lastIndexOf(':');
  const nc = spawn('nc', [addr.slice(0, i), addr.slice(i + 1)], { stdio: ['pipe', 'pipe', 'ignore'] });
  const lines = [];
  let buf = '';
  nc.stdout.setEncoding('utf8');
  nc.stdout.on('data', (d) => {
    buf += d;
    let n;
    while ((n = buf.indexOf('\n')) >= 0) {
      lines.push(buf.slice(0, n).replace(/\r$/, ''));
      buf = buf.slice(n + 1);
    }
  });
  nc.on('error', (e) => { throw new Error(`nc: ${e.message}`); });
  nc.stdin.on('error', () => {});
  return {
    lines,
    send: (text) => nc.stdin.write(`${text}\n`),
    close: () => nc.kill(),
    // `[12:00:01] <ann> hello` -> `ann: hello`
    messages: () =>
      lines.map((l) => l.match(/^\[\d\d:\d\d:\d\d\] <([^>]+)> (.*)$/)).filter(Boolean).map((m) => `${m[1]}: ${m[2]}`),
  };
}

// ---- a raw WebSocket handshake, to see the status line ----------------------------------------

function handshake(url, origin) {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: u.hostname, port: Number(u.port) });
    let got = '';
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error('handshake timed out'));
    }, WAIT);
    sock.on('connect', () => {
      sock.write(
        `GET /ws HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n` +
          `Origin: ${origin}\r\n\r\n`,
      );
    });
    sock.on('data', (d) => {
      got += d.toString('latin1');
      if (got.includes('\r\n')) {
        clearTimeout(timer);
        sock.destroy();
        resolve(got.split('\r\n')[0]);
      }
    });
    sock.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

// ---- page helpers ------------------------------------------------------------------------------

async function login(page, nick) {
  await page.goto(webUrl);
  await page.fill('#nick', nick);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('body[data-state=connected]', { timeout: WAIT });
  await until(`${nick} in the member list`, async () => (await members(page)).includes(nick));
}

const members = (page) => page.$$eval('#members li', (lis) => lis.map((li) => li.dataset.nick));
const messages = (page) =>
  page.$$eval('#log li.kind-message', (lis) =>
    lis.map((li) => `${li.querySelector('.nick').textContent}: ${li.querySelector('.text').textContent}`),
  );

async function say(page, text) {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
}

// Records every state the page passes through (a fast reconnect could slip between two polls).
async function recordStates(page) {
  await page.evaluate(() => {
    window.__states = [];
    const note = () =>
      window.__states.push(`${document.body.dataset.state}|${document.getElementById('banner').hidden ? 'nobanner' : 'banner'}`);
    new MutationObserver(note).observe(document.body, { attributes: true, attributeFilter: ['data-state'] });
  });
}

// ---- the test ----------------------------------------------------------------------------------

const profile = mkdtempSync(join(tmpdir(), 'sockit-chromium-'));
let context;
let tcp;
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
  const a = await context.newPage();
  const b = await context.newPage();
  for (const p of [a, b]) {
    p.on('pageerror', (e) => errors.push(String(e)));
    // Refused connections while the server restarts are expected; anything else is not.
    p.on('console', (m) => {
      if (m.type() === 'error' && !/WebSocket connection to .* failed/.test(m.text())) errors.push(m.text());
    });
  }
  log(`browser up (${context.browser()?.version() ?? 'chromium'})`);

  // The Origin check: a foreign page may not open the socket; the page's own origin may.
  const foreign = await handshake(webUrl, 'http://evil.example');
  assert(foreign.includes(' 403 '), `foreign origin got "${foreign}", not 403`);
  const own = await handshake(webUrl, new URL(webUrl).origin);
  assert(own.includes(' 101 '), `own origin got "${own}", not 101`);
  log('origin check: foreign 403, own 101');

  await login(a, 'ann');
  await login(b, 'bob');
  tcp = tcpClient(tcpAddr);
  tcp.send('/nick carol');
  await until('carol in ann\'s member list', async () => (await members(a)).includes('carol'));
  sameList(await members(a), ['ann', 'bob', 'carol'], 'ann sees the members');
  await until('carol in bob\'s member list', async () => (await members(b)).includes('carol'));
  log('ann, bob (browsers) and carol (nc) are in #lobby');

  // Everyone talks at once; everyone must see the same messages in the same order.
  const evil = '<img src=x onerror="window.__pwned=1"><b>not bold</b>';
  const sent = [];
  for (let i = 1; i <= 3; i++) {
    const said = [
      say(a, `ann says ${i}`),
      say(b, i === 2 ? evil : `bob says ${i}`),
      Promise.resolve(tcp.send(`carol says ${i}`)),
    ];
    await Promise.all(said);
    sent.push(`ann: ann says ${i}`, `bob: ${i === 2 ? evil : `bob says ${i}`}`, `carol: carol says ${i}`);
  }
  const complete = (list) => sent.every((m) => list.includes(m));
  await until('all 9 messages at ann', async () => complete(await messages(a)));
  await until('all 9 messages at bob', async () => complete(await messages(b)));
  await until('all 9 messages at carol', async () => complete(tcp.messages()));
  const seenA = await messages(a);
  const seenB = await messages(b);
  const seenC = tcp.messages();
  sameList(seenA, seenB, 'ann and bob see the same order');
  sameList(seenA, seenC, 'ann and carol see the same order');
  assert(seenA.length === 9, `9 messages, got ${seenA.length}`);
  assert(!(await a.evaluate(() => window.__pwned)), 'markup in a message ran');
  assert((await a.$$('#log img, #log b')).length === 0, 'markup in a message became elements');
  log(`same 9 messages in the same order everywhere: ${seenA.join(' | ')}`);

  // Commands from the input line, and their replies styled apart from messages.
  await say(a, '/me waves');
  await a.waitForSelector('#log li.kind-action >> text=waves');
  await say(a, '/rooms');
  await a.waitForSelector('#log li.reply >> text=rooms: #lobby (3)');
  await a.waitForSelector('#rooms li[data-room=lobby]');
  await say(a, '/frobnicate');
  await a.waitForSelector('#log li.error >> text=unknown command');
  log('commands: /me, /rooms (list filled), unknown command shown as an error');

  // A nick that is taken: the page says so where it stays, and lets the person pick another.
  const c = await context.newPage();
  c.on('pageerror', (e) => errors.push(String(e)));
  await c.goto(webUrl);
  await c.fill('#nick', 'ANN');
  await c.click('#login-form button[type=submit]');
  await c.waitForSelector('body[data-state=connected]', { timeout: WAIT });
  await c.waitForSelector('#nick-taken:not([hidden])', { timeout: WAIT });
  const takenText = await c.textContent('#nick-taken-text');
  assert(/ANN/.test(takenText) && /taken/.test(takenText), `nick-taken text: ${takenText}`);
  await c.waitForTimeout(2000);
  assert(await c.locator('#nick-taken').isVisible(), 'the nick-taken error went away by itself');
  await c.fill('#nick-retry', 'ann');
  await c.press('#nick-retry', 'Enter');
  await until('a second refusal', async () => (await c.$$('#log li.error')).length >= 1);
  assert(await c.locator('#nick-taken').isVisible(), 'the nick-taken error hid on a second refusal');
  await c.fill('#nick-retry', 'dora');
  await c.press('#nick-retry', 'Enter');
  await until('dora is the nick', async () => (await c.textContent('#me')) === 'dora');
  assert(!(await c.locator('#nick-taken').isVisible()), 'the nick-taken error stayed after a good nick');
  await until('dora in ann\'s member list', async () => (await members(a)).includes('dora'));
  await c.close();
  await until('dora gone from ann\'s list', async () => !(await members(a)).includes('dora'));
  log('taken nick: a lasting error on the page, another nick picked from it');

  // History on join: a page that comes back is shown what was said.
  await b.reload();
  await login(b, 'bob');
  await until('history replayed to bob', async () => complete(await messages(b)));
  log('history replayed on join');

  // Leaving: carol quits and disappears from the member list.
  tcp.send('/quit bye now');
  await until('carol gone from ann\'s list', async () => !(await members(a)).includes('carol'));
  await a.waitForSelector('#log li.notice >> text=carol left #lobby (bye now)');
  tcp.close();
  log('leave notice and member list updated');

  await a.screenshot({ path: join(shotDir, 'chat-web.png') });
  await b.setViewportSize({ width: 390, height: 844 });
  await b.waitForTimeout(100);
  const overflow = await b.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert(overflow <= 0, `page wider than a phone by ${overflow}px`);
  const sendBox = await b.locator('#send').boundingBox();
  assert(sendBox && sendBox.x + sendBox.width <= 390 && sendBox.y + sendBox.height <= 844, 'send button off screen on a phone');
  assert(!(await b.locator('#side').isVisible()) || (await b.locator('#side').boundingBox()).x < 0, 'side panel covers the phone screen');
  await b.screenshot({ path: join(shotDir, 'chat-web-phone.png') });
  await b.click('#menu');
  await until('drawer open', async () => (await b.locator('#side').boundingBox()).x >= 0);
  await b.waitForTimeout(250);
  await b.screenshot({ path: join(shotDir, 'chat-web-phone-drawer.png') });
  await b.click('#menu');
  log('screenshots saved; phone layout fits 390x844');

  // The server restarts: the pages say so, reconnect by themselves, and chat goes on.
  await recordStates(a);
  await recordStates(b);
  const restarted = new Promise((resolve) => stdinLines.once('line', resolve));
  console.log('RESTART');
  // The server is down for a moment: the page says so.
  await a.waitForSelector('body[data-state=disconnected]', { timeout: 5000 });
  await a.waitForSelector('#banner:not([hidden])', { timeout: 1000 });
  await a.locator('#log li.reply', { hasText: 'the server is shutting down; goodbye' }).waitFor();
  const inView = await a.evaluate(() => {
    const log = document.getElementById('log');
    return log.lastElementChild.getBoundingClientRect().bottom <= log.getBoundingClientRect().bottom + 1;
  });
  assert(inView, 'the newest line is scrolled out of view');
  await a.screenshot({ path: join(shotDir, 'chat-web-disconnected.png') });
  const answer = await restarted;
  assert(answer.trim() === 'RESTARTED', `expected RESTARTED, got ${answer}`);
  log('server restarted');
  await a.waitForSelector('body[data-state=connected]', { timeout: 20000 });
  await b.waitForSelector('body[data-state=connected]', { timeout: 20000 });
  const statesA = await a.evaluate(() => window.__states);
  log(`ann's page went through: ${statesA.join(' -> ')}`);
  assert(statesA.includes('disconnected|banner'), 'the disconnected state (with its banner) was not shown');
  assert(statesA.at(-1) === 'connected|nobanner', 'not connected at the end');
  assert((await a.textContent('#me')) === 'ann', 'ann lost her nick on reconnect');
  await until('both back in the member list', async () => JSON.stringify(await members(a)) === '["ann","bob"]', 20000);
  await say(a, 'back again');
  await until('the message after the restart reaches bob', async () =>
    (await messages(b)).includes('ann: back again'),
  );
  log('reconnected after the restart; a message went through');

  // A line that names ann (as a word, any case) is highlighted on her page; "annie" is not her.
  await say(b, 'annie is not you');
  await say(b, 'hey ANN: look');
  await until('the mention at ann', async () => (await messages(a)).includes('bob: hey ANN: look'));
  const marked = await a.$$eval('#log li.kind-message', (lis) =>
    lis.filter((li) => li.classList.contains('mention')).map((li) => li.querySelector('.text').textContent),
  );
  sameList(marked, ['hey ANN: look'], 'the lines highlighted as mentions of ann');
  log('a mention of ann is highlighted on her page');

  assert(errors.length === 0, `page errors: ${errors.join('; ')}`);
  log('all checks passed');
} catch (e) {
  console.error(`[e2e] FAILED: ${e.stack || e}`);
  try {
    if (context) {
      const pages = context.pages();
      if (pages[0]) await pages[0].screenshot({ path: join(shotDir, 'chat-web-failure.png') });
    }
  } catch (_) {
    /* best effort */
  }
  process.exitCode = 1;
} finally {
  if (tcp) tcp.close();
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
  stdinLines.close();
}
