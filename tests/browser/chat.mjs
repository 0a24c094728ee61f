// Two people chat in the web client: enter by the form and by a shared link, see each other
// enter and rename live, send with Enter and Shift+Enter, and markup in a message or a
// nickname stays text. A third enters later and sees the recent messages. Then the badge on a
// page of another origin (and on a local HTML file) shows the room and updates live, without
// setting a cookie.

import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join, resolve } from 'node:path';
import { artifacts, base, check, enter, person, run, say, screenshot, texts, waitForTexts } from './lib.mjs';

const ROOM = 'garden';
const MARKUP = '<img src=x onerror="window.pwned=1"><b>bold</b> & <script>window.pwned=2</script>';
const NICK_MARKUP = '<i onclick="x()">mal</i>';

await run(async (browser) => {
  const alice = await person(browser);
  await enter(alice, 'alice', ROOM);
  check(new URL(alice.url()).pathname === `/rooms/${ROOM}`, `the room is in the URL: ${alice.url()}`);

  // Bob follows the link Alice shared: the room is filled in, he types a nickname and presses Enter.
  const bob = await person(browser, { width: 390, height: 844 });
  await bob.goto(`${base}/rooms/${ROOM}`);
  check(await bob.getByLabel('Room', { exact: true }).inputValue() === ROOM, 'a shared link fills in the room');
  await bob.getByLabel('Nickname', { exact: true }).fill('bob');
  await bob.getByLabel('Nickname', { exact: true }).press('Enter');
  await bob.getByLabel('Message', { exact: true }).waitFor();

  await alice.locator('#log li.notice', { hasText: 'bob entered' }).waitFor();
  await alice.locator('#occupants li', { hasText: 'bob' }).waitFor();
  // The room shows while Bob's enter is still on its way, and Alice may hear of it first:
  // his list is drawn when his enter is answered.
  await bob.locator('#occupants li', { hasText: 'alice' }).first().waitFor();
  check(await bob.locator('#occupants li', { hasText: 'alice' }).count() === 1, 'bob sees alice listed once');

  await say(alice, 'hello bob');
  await waitForTexts(bob, (t) => t.includes('hello bob'), 'bob sees hello');

  // Shift+Enter makes a new line; Enter sends.
  const field = bob.getByLabel('Message', { exact: true });
  await field.fill('line one');
  await field.press('Shift+Enter');
  await field.pressSequentially('line two');
  check(await field.inputValue() === 'line one\nline two', 'Shift+Enter adds a line');
  await field.press('Enter');
  await waitForTexts(alice, (t) => t.includes('line one\nline two'), 'alice gets both lines');

  await say(alice, MARKUP);
  await waitForTexts(bob, (t) => t.includes(MARKUP), 'bob sees the markup as text');
  check(await bob.locator('#log img, #log b, #log script').count() === 0, 'no element came from the message');
  check(await bob.evaluate(() => window.pwned) === undefined, 'no script of the message ran');

  // Bob renames himself to markup: Alice sees the change live, as text.
  await bob.getByRole('button', { name: 'Nickname' }).click();
  await bob.getByLabel('New nickname').fill(NICK_MARKUP);
  await bob.getByLabel('New nickname').press('Enter');
  await alice.locator('#log li.notice', { hasText: `bob is now ${NICK_MARKUP}` }).waitFor();
  await alice.locator('#occupants li', { hasText: NICK_MARKUP }).waitFor();
  check(await alice.locator('#occupants li', { hasText: /^bob$/ }).count() === 0, 'the old nickname is gone');
  check(await alice.locator('#log i, #occupants i').count() === 0, 'no element came from the nickname');
  await say(bob, 'renamed');
  await alice.locator('#log li', { hasText: 'renamed' }).locator('.who', { hasText: NICK_MARKUP }).waitFor();

  // Carol comes later and is shown what was said before.
  const carol = await person(browser);
  await enter(carol, 'carol', ROOM);
  const earlier = await waitForTexts(carol, (t) => t.includes('hello bob') && t.includes('renamed'), 'carol sees recent messages');
  check(earlier.filter((t) => t === 'hello bob').length === 1, 'recent messages once each');
  await alice.locator('#count', { hasText: '(3)' }).waitFor();
  // Enter shows recent messages only; what came before them loads on demand.
  check(await carol.locator('#log li.notice', { hasText: 'alice entered' }).count() === 0, 'recent messages only');
  await carol.getByRole('button', { name: 'Load older messages' }).click();
  await carol.locator('#log li.notice', { hasText: 'alice entered' }).waitFor();
  await carol.getByRole('button', { name: 'Load older messages' }).waitFor({ state: 'hidden' });
  check((await texts(carol))[0] === 'hello bob', 'older events go above the recent ones');

  await screenshot(alice, 'room-desktop');
  await screenshot(bob, 'room-phone');

  // The badge on another origin's page: a second local port.
  const site = createServer((request, response) => {
    response.setHeader('Content-Type', 'text/html; charset=utf-8');
    response.end(`<!doctype html><html><head><title>A blog</title></head><body style="font-family:serif">
      <h1>A blog about gardens</h1><p>Come and talk:</p>
      <script src="${base}/badge.js" data-room="${ROOM}"></script>
      <p>More text after the badge.</p></body></html>`);
  });
  await new Promise((resolve) => { site.listen(0, '127.0.0.1', resolve); });
  const siteUrl = `http://127.0.0.1:${site.address().port}/`;
  try {
    const reader = await person(browser);
    await reader.goto(siteUrl);
    const badge = reader.locator('.lingr-badge');
    await badge.locator('.count', { hasText: '3 people here' }).waitFor();
    await badge.locator('li', { hasText: 'renamed' }).waitFor();
    check(await badge.locator('a.room').getAttribute('href') === `${base}/rooms/${ROOM}`, 'the badge links to the room');
    check(await badge.locator('i, b, img').count() === 0, 'the badge shows markup as text');
    await say(alice, 'news for the badge');
    await badge.locator('li', { hasText: 'news for the badge' }).waitFor();
    await bob.getByRole('button', { name: 'Leave' }).click();
    await badge.locator('.count', { hasText: '2 people here' }).waitFor();
    check((await reader.context().cookies()).length === 0, 'the badge set no cookie');
    check(await reader.evaluate(() => document.querySelector('.lingr-badge').shadowRoot !== null), 'the badge lives in an open shadow root');
    await screenshot(badge, 'badge');

    // A local HTML file embeds it too.
    const file = join(resolve(artifacts), 'badge-on-a-local-file.html');
    writeFileSync(file, `<!doctype html><p>My notes</p><script src="${base}/badge.js" data-room="${ROOM}"></script>`);
    const local = await person(browser);
    await local.goto(`file://${file}`);
    await local.locator('.lingr-badge li', { hasText: 'news for the badge' }).waitFor();
    const aliceSaw = await waitForTexts(alice, (t) => t.includes('news for the badge'), 'alice sees her message');
    check(aliceSaw.filter((t) => t === 'news for the badge').length === 1, `alice saw her message once: ${JSON.stringify(aliceSaw)}`);
  } finally {
    site.close();
  }
});
