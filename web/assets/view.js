// Drawing a room: its messages, notices and people. Everything from the network is set as
// text (textContent), never as markup, so a message or nickname with markup stays inert.

const $ = (id) => document.getElementById(id);

/** Makes an element with text content and, optionally, a class. */
function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function timeOf(event) {
  const at = new Date(event.timestamp);
  const node = element('time', Number.isNaN(at.getTime())
    ? ''
    : at.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }));
  node.dateTime = event.timestamp ?? '';
  return node;
}

/** The line an event makes in the log. */
function line(event, mine) {
  const item = document.createElement('li');
  item.dataset.counter = String(event.counter);
  if (event.type === 'message') {
    if (event.occupant_id === mine) item.classList.add('mine');
    item.append(timeOf(event), element('span', event.nickname, 'who'), element('span', event.text, 'text'));
    return item;
  }
  item.classList.add('notice');
  const what = {
    enter: `${event.nickname} entered`,
    exit: event.reason === 'timeout' ? `${event.nickname} timed out` : `${event.nickname} left`,
    nickname: `${event.prev_nickname} is now ${event.nickname}`,
  }[event.type] ?? `${event.type}`;
  item.append(timeOf(event), element('span', what, 'text'));
  return item;
}

/** The room page's parts. */
export class RoomView {
  constructor() {
    this.log = $('log');
    this.scroller = this.log.parentElement;
    this.occupantList = $('occupants');
    this.people = new Map();
    this.count = 0;
  }

  /** Starts the page over for `room`, with `count` people of whom `occupants` are listed. */
  reset(room, occupants, count) {
    $('room-name').textContent = room;
    document.title = `${room} · Lingr`;
    this.log.replaceChildren();
    $('older').hidden = false;
    this.people = new Map(occupants.map((o) => [o.id, o.nickname]));
    this.count = count;
    this.drawPeople();
  }

  /** Appends events said now (the log follows them if it was at its end). */
  append(events, mine) {
    const atEnd = this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight < 40;
    this.log.append(...events.map((event) => line(event, mine)));
    if (atEnd) this.scroller.scrollTop = this.scroller.scrollHeight;
  }

  /** Puts older events above the ones shown, keeping the view where it was. */
  prepend(events, mine) {
    const fromEnd = this.scroller.scrollHeight - this.scroller.scrollTop;
    this.log.prepend(...events.map((event) => line(event, mine)));
    this.scroller.scrollTop = this.scroller.scrollHeight - fromEnd;
  }

  /** The oldest counter shown, if any. */
  oldestCounter() {
    const first = this.log.firstElementChild;
    return first ? Number(first.dataset.counter) : undefined;
  }

  /** Follows who is here through enter, exit and nickname events. */
  track(event) {
    if (event.type === 'enter') {
      if (!this.people.has(event.occupant_id)) this.count += 1;
      this.people.set(event.occupant_id, event.nickname);
    } else if (event.type === 'exit') {
      this.count = Math.max(0, this.count - 1);
      this.people.delete(event.occupant_id);
    } else if (event.type === 'nickname') {
      if (this.people.has(event.occupant_id)) this.people.set(event.occupant_id, event.nickname);
    } else {
      return;
    }
    this.drawPeople();
  }

  drawPeople() {
    const names = [...this.people.values()].sort((a, b) => a.localeCompare(b));
    this.occupantList.replaceChildren(...names.map((name) => element('li', name)));
    $('count').textContent = `(${this.count})`;
    const unlisted = this.count - this.people.size;
    $('more-occupants').textContent = unlisted > 0 ? `and ${unlisted} more` : '';
  }

  /** Shows the connection's state: '' when all is well. */
  status(text, reconnecting) {
    const node = $('status');
    node.textContent = text;
    node.classList.toggle('reconnecting', Boolean(reconnecting));
  }
}
