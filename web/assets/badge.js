// Lingr's live badge: a small box showing a room's name, how many people are in it and its
// last messages, live. Embed it on any site with
//
//   <script src="https://HOST/badge.js" data-room="ROOM"></script>
//
// It observes as an anonymous observer over JSONP (so it works from any origin), sets no
// cookies, keeps its styles inside an open shadow root, and starts only after the host page's
// `load` event: a held observe started before it would keep the page loading for good.
(() => {
  'use strict';
  const script = document.currentScript;
  if (!script) return;
  const room = script.dataset.room ?? '';
  const origin = new URL(script.src, location.href).origin;
  const LAST_MESSAGES = 5;
  const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(room)) {
    console.warn('Lingr badge: data-room must be a room name (letters, digits, "_" or "-")');
    return;
  }

  const host = document.createElement('div');
  host.className = 'lingr-badge';
  script.after(host);
  const shadow = host.attachShadow({ mode: 'open' });
  // Fixed markup only: everything from the network goes in as text.
  shadow.innerHTML = `
<style>
  :host { all: initial; display: inline-block; }
  .box { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1c2430;
    background: #fff; border: 1px solid #e3e6eb; border-radius: 10px; width: 18rem; padding: 0.7rem 0.9rem;
    box-shadow: 0 1px 3px rgba(0,0,0,.06); }
  .head { display: flex; align-items: baseline; gap: 0.5rem; }
  .room { font-weight: 600; color: #2f6fed; text-decoration: none; overflow: hidden; text-overflow: ellipsis;
    white-space: nowrap; flex: 1; }
  .room:hover { text-decoration: underline; }
  .count { color: #667085; font-size: 12px; white-space: nowrap; }
  ol { list-style: none; margin: 0.5rem 0 0; padding: 0; }
  li { padding: 0.15rem 0; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
  .who { font-weight: 600; margin-right: 0.35rem; }
  .empty, .status { color: #667085; font-size: 12px; margin: 0.4rem 0 0; }
  .status:empty { display: none; }
  .live { display: inline-block; width: 7px; height: 7px; border-radius: 50%; background: #98a2b3; }
  .live.on { background: #12b76a; }
</style>
<div class="box" part="box">
  <div class="head"><span class="live" title="live"></span><a class="room" target="_blank" rel="noopener"></a>
    <span class="count"></span></div>
  <ol class="messages"></ol>
  <p class="status" role="status"></p>
</div>`;
  const $ = (selector) => shadow.querySelector(selector);
  const link = $('.room');
  link.textContent = room;
  link.href = `${origin}/rooms/${encodeURIComponent(room)}`;

  let count = 0;
  let messages = [];

  function draw() {
    $('.count').textContent = count === 1 ? '1 person here' : `${count} people here`;
    const list = $('.messages');
    if (messages.length === 0) {
      const empty = document.createElement('li');
      empty.className = 'empty';
      empty.textContent = 'No messages yet';
      list.replaceChildren(empty);
      return;
    }
    list.replaceChildren(...messages.map((message) => {
      const item = document.createElement('li');
      const who = document.createElement('span');
      who.className = 'who';
      who.textContent = message.nickname;
      item.append(who, document.createTextNode(message.text));
      item.title = `${message.nickname}: ${message.text}`;
      return item;
    }));
  }

  function status(text) {
    $('.status').textContent = text;
    $('.live').classList.toggle('on', text === '');
  }

  let callbacks = 0;
  function jsonp(path, params, waitMs) {
    return new Promise((resolve, reject) => {
      const name = `lingrBadge${Date.now().toString(36)}_${callbacks++}`;
      const tag = document.createElement('script');
      let timer = 0;
      const finish = () => {
        clearTimeout(timer);
        window[name] = () => {};
        setTimeout(() => { delete window[name]; }, 120000);
        tag.remove();
      };
      window[name] = (body) => {
        finish();
        if (body && body.status === 'ok') resolve(body);
        else reject(Object.assign(new Error(body?.detail ?? 'bad answer'), { code: body?.code ?? 'bad_answer' }));
      };
      tag.onerror = () => { finish(); reject(Object.assign(new Error('unreachable'), { code: 'network' })); };
      timer = setTimeout(() => { finish(); reject(Object.assign(new Error('no answer'), { code: 'timeout' })); }, waitMs);
      tag.src = `${origin}/api/${path}?${new URLSearchParams({ ...params, callback: name })}`;
      document.head.append(tag);
    });
  }

  const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });
  const backoff = (n) => BACKOFF_MS[Math.min(n, BACKOFF_MS.length - 1)];

  /** Observes from `counter` until the ticket or counter stops being good; resolves with
   *  whether any observe was answered. */
  async function observe(session, ticket, counter) {
    let failures = 0;
    let answered = false;
    for (;;) {
      try {
        const answer = await jsonp('room/observe', { session, ticket, counter, timeout: 30 }, 45000);
        for (const event of answer.events) {
          if (event.counter <= counter) continue;
          if (event.type === 'enter') count += 1;
          else if (event.type === 'exit') count = Math.max(0, count - 1);
          else if (event.type === 'message') messages.push(event);
        }
        messages = messages.slice(-LAST_MESSAGES);
        counter = answer.counter;
        failures = 0;
        answered = true;
        status('');
        draw();
      } catch (err) {
        if (['counter_expired', 'invalid_session', 'invalid_ticket'].includes(err.code)) return answered;
        status('Reconnecting…');
        await sleep(backoff(failures));
        failures += 1;
      }
    }
  }

  async function run() {
    for (let failures = 0; ; ) {
      try {
        const { session } = await jsonp('session/create', {}, 15000);
        const entered = await jsonp('room/enter', { session, room }, 15000);
        count = entered.room.occupant_count;
        messages = entered.room.messages.slice(-LAST_MESSAGES);
        status('');
        draw();
        // Entering again and again without one answer would flood the room: wait more each time.
        if (await observe(session, entered.ticket, entered.counter)) {
          failures = 0;
        } else {
          await sleep(backoff(failures));
          failures += 1;
        }
      } catch {
        status('Reconnecting…');
        await sleep(backoff(failures));
        failures += 1;
      }
    }
  }

  status('Connecting…');
  if (document.readyState === 'complete') run();
  else window.addEventListener('load', run, { once: true });
})();
