// What the web client does with the API's errors: a say refused with 429 `rate_limited` says
// so beside the field and keeps the text to send again; when every ticket dies (the servers
// restart with another secret) both pages enter again by themselves and observe on from where
// they were, a say in flight is sent once, and nobody loses a message or sees one twice.

import { ask, check, enter, person, run, waitForTexts } from './lib.mjs';

const ROOM = 'strict';

/** Sends what the Message field holds, again while the api refuses it for the rate (a token a
 *  second), as a person would after reading the error. */
async function sendUntilAccepted(page) {
  const field = page.getByLabel('Message', { exact: true });
  const text = await field.inputValue();
  for (let tries = 0; await field.inputValue() === text; tries += 1) {
    check(tries < 40, `"${text}" was accepted within 20 s`);
    await field.press('Enter');
    await page.waitForFunction(() => !document.querySelector('#say-form button').disabled);
    if (await field.inputValue() === text) await new Promise((resolve) => { setTimeout(resolve, 500); });
  }
}

await run(async (browser) => {
  const alice = await person(browser);
  const bob = await person(browser);
  await enter(alice, 'alice', ROOM);
  await enter(bob, 'bob', ROOM);

  // The api's bucket holds three calls (the enter took one) and refills one a second: sending
  // one message after another, one is soon refused.
  const field = alice.getByLabel('Message', { exact: true });
  const said = [];
  for (;;) {
    const text = `burst ${said.length}`;
    await field.fill(text);
    await field.press('Enter');
    await alice.waitForFunction(() => !document.querySelector('#say-form button').disabled);
    said.push(text);
    if (await field.inputValue() === text) break;
    check(said.length < 30, 'the api refused a message within 30 sent at once');
  }
  await alice.locator('#say-error', { hasText: 'sending too fast' }).waitFor();
  await sendUntilAccepted(alice);
  check(await alice.locator('#say-error').textContent() === '', 'the error clears once sent');
  await waitForTexts(bob, (t) => t.includes(said.at(-1)), 'bob gets the message sent again');

  await ask('new-secret');
  // Entering again spends a call too: the say may have to wait for its token.
  await field.fill('after the new secret');
  await sendUntilAccepted(alice);
  const seen = await waitForTexts(bob, (t) => t.includes('after the new secret'), 'bob entered again and gets it');
  for (const text of [...said, 'after the new secret']) {
    check(seen.filter((t) => t === text).length === 1, `${text} shown once: ${JSON.stringify(seen)}`);
  }
  for (const page of [alice, bob]) {
    await page.waitForFunction(() => document.getElementById('status').textContent === '');
  }
  // Alice sees her own message from her observe, which entered again on its own backoff: wait
  // for it, then hold her log to it once.
  const aliceSaw = await waitForTexts(alice, (t) => t.includes('after the new secret'), 'alice sees what she said');
  check(aliceSaw.filter((t) => t === 'after the new secret').length === 1, `alice said it once: ${JSON.stringify(aliceSaw)}`);
});
