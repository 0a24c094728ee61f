// Being in a room: entering, observing from the counter the server gave (so nothing is lost or
// shown twice), saying, renaming and leaving, and what each API error means for the page.

import { ApiError, call, jsonp, messages } from './api.js';

/** How long an observe is held by the server, and how long the page waits for its answer. */
const OBSERVE_TIMEOUT_S = 30;
const OBSERVE_WAIT_MS = (OBSERVE_TIMEOUT_S + 15) * 1000;
/** Waits between failed observes: the counter stays, so a retry loses nothing. */
const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000];

/** Errors after which the observe is tried again later with the same counter. */
const TRANSIENT = new Set([
  'network', 'timeout', 'draining', 'overloaded', 'unavailable', 'too_many_observes',
  'internal', 'request_timeout', 'bad_answer',
]);
/** Errors that mean the session or ticket is no longer good: enter again. */
const GONE = new Set(['invalid_session', 'invalid_ticket']);

const sleep = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });
const randomId = () => crypto.getRandomValues(new Uint32Array(4)).join('-');

/** A person in a room, drawn on `view`. */
export class Presence {
  constructor(room, nickname, view) {
    this.room = room;
    this.nickname = nickname;
    this.view = view;
    this.session = undefined;
    this.ticket = undefined;
    this.occupantId = undefined;
    this.counter = 0;
    this.active = false;
    this.reentering = null;
    // Each entry gets its own generation: an observe of an earlier one ends quietly.
    this.generation = 0;
  }

  /** Enters the room and starts observing it. */
  async start() {
    this.active = true;
    await this.enter(true);
    this.observeForever();
  }

  /** Enters the room. `fresh`: the page starts over with the room as it is now (first entry,
   *  or a counter too old to observe from); otherwise only the ticket is new, and observing
   *  goes on from the counter it had, so the log misses nothing. */
  async enter(fresh) {
    if (!this.session) {
      this.session = (await call('session/create', { nickname: this.nickname })).session;
    }
    let entered;
    try {
      entered = await call('room/enter', {
        session: this.session, room: this.room, idempotent_id: randomId(),
      });
    } catch (err) {
      if (err instanceof ApiError && err.code === 'invalid_session') {
        this.session = undefined;
        return this.enter(fresh);
      }
      throw err;
    }
    if (!this.active) {
      // Left (or navigated away) while entering: leave this entry too.
      call('room/exit', { session: this.session, ticket: entered.ticket }).catch(() => {});
      throw new ApiError('left', 'left the room while entering it');
    }
    this.generation += 1;
    this.ticket = entered.ticket;
    this.occupantId = entered.occupant_id;
    if (fresh) {
      this.counter = entered.counter;
      this.view.reset(this.room, entered.room.occupants, entered.room.occupant_count);
      this.view.append(entered.room.messages, this.occupantId);
    }
  }

  /** Enters again after the session, ticket or counter stopped being good, until it works.
   *  A say and the observe that find the ticket dead at once share one new entry. */
  reenter(why, fresh) {
    this.reentering ??= this.enterUntilIn(why, fresh).finally(() => { this.reentering = null; });
    return this.reentering;
  }

  async enterUntilIn(why, fresh) {
    for (let attempt = 0; this.active; attempt += 1) {
      this.view.status(why, true);
      try {
        await this.enter(fresh);
        this.view.status('', false);
        return;
      } catch (err) {
        if (err instanceof ApiError && GONE.has(err.code)) this.session = undefined;
        await sleep(BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)]);
      }
    }
  }

  /** Observes from the counter it has, as long as it is in the room. */
  async observeForever() {
    let failures = 0;
    while (this.active) {
      const generation = this.generation;
      try {
        const answer = await jsonp('room/observe', {
          session: this.session, ticket: this.ticket, counter: this.counter, timeout: OBSERVE_TIMEOUT_S,
        }, OBSERVE_WAIT_MS);
        if (!this.active || generation !== this.generation) continue;
        failures = 0;
        this.view.status('', false);
        this.take(answer.events);
        this.counter = answer.counter;
      } catch (err) {
        if (!this.active || generation !== this.generation) continue;
        const code = err instanceof ApiError ? err.code : 'network';
        // Every failure until an observe is answered waits longer, entering again included:
        // tickets refused again and again must not make the page enter the room in a loop.
        const wait = BACKOFF_MS[Math.min(failures, BACKOFF_MS.length - 1)];
        failures += 1;
        if (code === 'counter_expired') {
          // The events after the counter are gone: leave this entry, start over.
          call('room/exit', { session: this.session, ticket: this.ticket }).catch(() => {});
          await sleep(wait);
          await this.reenter('Catching up…', true);
        } else if (GONE.has(code)) {
          if (code === 'invalid_session') this.session = undefined;
          this.view.status('Reconnecting…', true);
          await sleep(wait);
          await this.reenter('Reconnecting…', false);
        } else {
          // Transient or unknown: the same counter again, later, so nothing is lost.
          this.view.status(TRANSIENT.has(code) ? 'Reconnecting…' : `Reconnecting… (${code})`, true);
          await sleep(wait);
        }
      }
    }
  }

  take(events) {
    const fresh = events.filter((event) => event.counter > this.counter);
    for (const event of fresh) {
      this.view.track(event);
      if (event.occupant_id === this.occupantId && event.type === 'nickname') {
        this.nickname = event.nickname;
      }
    }
    this.view.append(fresh, this.occupantId);
  }

  /** Says `text`; the message shows when it comes back through the observe. */
  async say(text) {
    const id = randomId();
    try {
      await call('room/say', { session: this.session, ticket: this.ticket, message: text, idempotent_id: id });
    } catch (err) {
      if (err instanceof ApiError && GONE.has(err.code)) {
        // The retry carries the same id: said once, whatever happened to the first.
        await this.reenter('Reconnecting…', false);
        await call('room/say', { session: this.session, ticket: this.ticket, message: text, idempotent_id: id });
        return;
      }
      throw err;
    }
  }

  /** Changes the nickname shown in this room. */
  async rename(nickname) {
    await call('room/set_nickname', { session: this.session, ticket: this.ticket, nickname });
    this.nickname = nickname;
  }

  /** Loads the messages before the oldest shown; resolves with whether older ones remain. */
  async older() {
    const before = this.view.oldestCounter();
    const params = before === undefined ? { limit: 50 } : { before, limit: 50 };
    const page = await messages(this.room, params);
    this.view.prepend(page.messages, this.occupantId);
    return page.has_more;
  }

  /** Leaves the room (and stops observing it). */
  async leave() {
    this.active = false;
    this.generation += 1;
    // Still entering: that entry leaves by itself once it is made.
    if (!this.ticket) return;
    try {
      await call('room/exit', { session: this.session, ticket: this.ticket });
    } catch {
      // Gone already, or the server is away: presence times it out.
    }
  }

  /** Leaves as the page goes away: a beacon outlives the page. */
  leaveInBackground() {
    if (!this.active || !this.ticket) return;
    this.active = false;
    navigator.sendBeacon('/api/room/exit', new URLSearchParams({ session: this.session, ticket: this.ticket }));
  }
}

/** Words for an error a person can act on. */
export function explain(err) {
  if (!(err instanceof ApiError)) return 'Something went wrong.';
  switch (err.code) {
    case 'rate_limited': return 'You are sending too fast: wait a moment, then send again.';
    case 'network': case 'timeout': return 'The server cannot be reached right now. Try again.';
    case 'overloaded': case 'unavailable': case 'draining': return 'The server is busy. Try again in a moment.';
    default: return err.detail || err.code;
  }
}
