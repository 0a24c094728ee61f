// The web client through a comet restart: the comet is killed (kill -9) while Bob observes,
// Alice keeps talking, Bob's page shows that it is reconnecting, and once a comet is back it
// shows every message once, in order, and the reconnecting state clears by itself.

import { check, enter, ask, person, run, say, screenshot, waitForTexts } from './lib.mjs';

const ROOM = 'sturdy';

await run(async (browser) => {
  const alice = await person(browser);
  const bob = await person(browser);
  await enter(alice, 'alice', ROOM);
  await enter(bob, 'bob', ROOM);
  await say(alice, 'before the restart');
  await waitForTexts(bob, (t) => t.includes('before the restart'), 'bob sees the first message');

  await ask('kill-comet');
  const during = ['while the comet is down 1', 'while the comet is down 2', 'while the comet is down 3'];
  for (const text of during) await say(alice, text);
  await bob.locator('#status', { hasText: 'Reconnecting' }).waitFor();
  await screenshot(bob, 'reconnecting');

  await ask('start-comet');
  await say(alice, 'after the restart');
  const seen = await waitForTexts(bob, (t) => t.includes('after the restart'), 'bob catches up');
  const expected = ['before the restart', ...during, 'after the restart'];
  check(JSON.stringify(seen) === JSON.stringify(expected), `every message once, in order: ${JSON.stringify(seen)}`);
  // The reconnecting state clears by itself.
  await bob.waitForFunction(() => document.getElementById('status').textContent === '');
  // Alice's own observe was cut by the same kill and reconnects on its own backoff, so she may
  // catch up after Bob does: wait for her last line, then hold her log to the same order.
  const aliceSaw = await waitForTexts(alice, (t) => t.includes('after the restart'), 'alice catches up');
  check(JSON.stringify(aliceSaw) === JSON.stringify(expected), `alice saw each once, in order: ${JSON.stringify(aliceSaw)}`);
});
