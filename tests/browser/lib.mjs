// What every browser scenario shares: Debian's Chromium through playwright-core, checks that
// fail with a message, screenshots kept as test artifacts, and a line protocol with the Rust
// test that runs the scenario (it kills and starts roles when a scenario asks).

import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const base = process.argv[2];
export const artifacts = process.argv[3] ?? 'browser-artifacts';
if (!base) throw new Error('usage: node <scenario>.mjs BASE_URL [ARTIFACTS_DIR]');
mkdirSync(artifacts, { recursive: true });

/** Starts Chromium (headless; no sandbox, since tests may run as root). */
export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox'],
  });
}

/** Fails the scenario with `message` unless `condition` holds. */
export function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}

/** Keeps a screenshot of `target` (a page or a locator) as `<name>.png`. */
export async function screenshot(target, name) {
  const path = join(artifacts, `${name}.png`);
  await target.screenshot({ path });
  console.log(`screenshot ${path}`);
}

const lines = createInterface({ input: process.stdin });
const replies = lines[Symbol.asyncIterator]();

/** Asks the Rust test to do `step` (for example `kill-comet`) and waits until it is done. */
export async function ask(step) {
  console.log(`step ${step}`);
  const { value, done } = await replies.next();
  check(!done && value === `done ${step}`, `the test did ${step} (it answered ${value})`);
}

/** Opens a page in a context of its own (its own storage, as a second browser window). */
export async function person(browser, viewport = { width: 1100, height: 720 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on('pageerror', (err) => console.log(`page error: ${err.message}`));
  return page;
}

/** Enters `room` as `nickname` from the start page. */
export async function enter(page, nickname, room) {
  await page.goto(`${base}/`);
  await page.getByLabel('Nickname', { exact: true }).fill(nickname);
  await page.getByLabel('Room', { exact: true }).fill(room);
  await page.getByRole('button', { name: 'Enter' }).click();
  await page.getByLabel('Message', { exact: true }).waitFor();
}

/** Says `text` by typing it and pressing Enter. */
export async function say(page, text) {
  const field = page.getByLabel('Message', { exact: true });
  await field.fill(text);
  await field.press('Enter');
  try {
    await page.waitForFunction(() => document.getElementById('message').value === '', null, { timeout: 20_000 });
  } catch (err) {
    const shown = await page.locator('#say-error').textContent();
    const status = await page.locator('#status').textContent();
    throw new Error(`"${text}" was not sent (the page says "${shown}", status "${status}"): ${err.message}`);
  }
}

/** The texts of a page's message lines, in order. */
export async function texts(page) {
  return page.locator('#log li:not(.notice) .text').allTextContents();
}

/** Waits until `predicate` holds for the page's message texts. */
export async function waitForTexts(page, predicate, what) {
  const until = Date.now() + 20_000;
  for (;;) {
    const now = await texts(page);
    if (predicate(now)) return now;
    check(Date.now() < until, `${what}; the log shows ${JSON.stringify(now)}`);
    await new Promise((resolve) => { setTimeout(resolve, 100); });
  }
}

/** Runs `scenario`, then closes everything; exits non-zero with the reason if it failed. */
export async function run(scenario) {
  const browser = await launch();
  try {
    await scenario(browser);
    console.log('ok');
  } catch (err) {
    console.log(`FAILED: ${err.stack ?? err}`);
    process.exitCode = 1;
  } finally {
    await browser.close();
    lines.close();
  }
}
