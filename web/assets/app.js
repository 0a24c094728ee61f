// The page: the start form at `/`, a room at `/rooms/<room>` (a link that can be shared).
// The nickname is kept for this tab only (sessionStorage), so a reload re-enters the room.

import { Presence, explain } from './room.js';
import { RoomView } from './view.js';

const $ = (id) => document.getElementById(id);
const ROOM = /^[A-Za-z0-9_-]{1,64}$/;
const NICKNAME_KEY = 'lingr.nickname';

let here = null;

function roomInPath() {
  const match = /^\/rooms\/([^/]+)$/.exec(location.pathname);
  if (!match) return null;
  const room = decodeURIComponent(match[1]);
  return ROOM.test(room) ? room : null;
}

function showStart(room, error) {
  $('chat').hidden = true;
  $('start').hidden = false;
  document.title = 'Lingr';
  $('room').value = room ?? $('room').value;
  $('nickname').value = sessionStorage.getItem(NICKNAME_KEY) ?? $('nickname').value;
  $('start-error').textContent = error ?? '';
  ($('nickname').value ? $('room') : $('nickname')).focus();
}

async function showRoom(room, nickname) {
  $('start').hidden = true;
  $('chat').hidden = false;
  $('say-error').textContent = '';
  const presence = new Presence(room, nickname, new RoomView());
  here = presence;
  presence.view.status('Entering…', false);
  try {
    await presence.start();
    if (here !== presence) return;
    presence.view.status('', false);
    $('message').focus();
  } catch (err) {
    // Only if the page still shows this room: the person may have gone elsewhere meanwhile.
    if (here !== presence) return;
    here = null;
    showStart(room, `Could not enter: ${explain(err)}`);
  }
}

/** Shows what the URL names: a room (entered with the tab's nickname) or the start page. */
function route() {
  if (here) {
    here.leave();
    here = null;
  }
  const room = roomInPath();
  const nickname = sessionStorage.getItem(NICKNAME_KEY);
  if (room && nickname) showRoom(room, nickname);
  else showStart(room ?? new URLSearchParams(location.search).get('room'));
}

$('start-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const nickname = $('nickname').value.trim();
  const room = $('room').value.trim();
  if (!nickname) {
    $('start-error').textContent = 'Choose a nickname.';
    return;
  }
  if (!ROOM.test(room)) {
    $('start-error').textContent = 'A room name is 1 to 64 letters, digits, “_” or “-”.';
    return;
  }
  sessionStorage.setItem(NICKNAME_KEY, nickname);
  history.pushState(null, '', `/rooms/${encodeURIComponent(room)}`);
  route();
});

$('say-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const field = $('message');
  const text = field.value;
  if (!here || !text.trim()) return;
  const button = event.submitter ?? $('say-form').querySelector('button');
  button.disabled = true;
  try {
    await here.say(text);
    // Cleared only once stored: a refused message stays in the field to send again.
    if (field.value === text) field.value = '';
    $('say-error').textContent = '';
  } catch (err) {
    $('say-error').textContent = explain(err);
  } finally {
    button.disabled = false;
    field.focus();
  }
});

// Enter sends; Shift+Enter starts a new line.
$('message').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $('say-form').requestSubmit();
  }
});

$('rename').addEventListener('click', () => {
  $('rename-form').hidden = false;
  $('new-nickname').value = here?.nickname ?? '';
  $('rename-error').textContent = '';
  $('new-nickname').focus();
});
$('rename-cancel').addEventListener('click', () => { $('rename-form').hidden = true; });
$('rename-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const nickname = $('new-nickname').value.trim();
  if (!here || !nickname) return;
  try {
    await here.rename(nickname);
    sessionStorage.setItem(NICKNAME_KEY, nickname);
    $('rename-form').hidden = true;
  } catch (err) {
    $('rename-error').textContent = explain(err);
  }
});

$('older').addEventListener('click', async () => {
  if (!here) return;
  try {
    $('older').hidden = !(await here.older());
  } catch (err) {
    $('say-error').textContent = explain(err);
  }
});

$('leave').addEventListener('click', async () => {
  const leaving = here;
  here = null;
  if (leaving) await leaving.leave();
  history.pushState(null, '', '/');
  showStart(leaving?.room);
});

window.addEventListener('popstate', route);
window.addEventListener('pagehide', () => here?.leaveInBackground());
route();
// Back from the browser's page cache, the room was left on the way out: enter it again.
window.addEventListener('pageshow', (event) => {
  if (event.persisted) route();
});
