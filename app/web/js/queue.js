// Items leased ahead and answers sent behind: the next item is always on screen at once.
//
// The queue keeps a batch or two of leased items ahead of the annotator, renews their leases
// while the tab is visible and lets them lapse when it is not (a sleeping laptop holds
// nobody's work for long), drops items whose lease expired (someone else may have them by
// now), and releases what is left when the page closes. Answers go to an outbox kept in
// session storage and are sent in the background, retried until the server has them: a
// lost connection or an expired lease never loses an answer (the server keeps late answers).

import { ApiError, del, get, post } from "./api.js";

const AHEAD = 3; // fetch more when fewer than this many items are waiting
const BATCH_SIZE = 10;
const EMPTY_POLL_MS = 10000;
const RETRY_MS = [1000, 2000, 5000, 10000, 30000];

export function leaseSeconds() {
  // The lease asked for (default 10 minutes); session storage may set another (tests do).
  const chosen = Number(sessionStorage.getItem("labelwise.leaseSeconds"));
  return Number.isInteger(chosen) && chosen > 0 ? chosen : 600;
}

export class LeaseQueue {
  constructor({ projectId, owner, queue, send, onChange, onError, chunk = 500 }) {
    this.chunk = chunk; // answers per request
    this.projectId = projectId;
    this.queue = queue; // "label" or "review"
    this.send = send; // (entries) => Promise<[{ok, problem}]>: posts a chunk of the outbox
    this.onChange = onChange;
    this.onError = onError;
    this.base = `v1/projects/${projectId}/batches`;
    this.waiting = []; // [{entry, batchId}] in order
    this.current = null; // the item on screen (set by the page)
    this.batches = new Map(); // batchId -> local time its leases expire (ms)
    this.seen = new Set(); // item ids handed to this page already
    // One outbox per signed-in name: another key signing in to this tab never sends it.
    this.outboxKey = `labelwise.outbox.${owner}.${queue}.${projectId}`;
    this.outbox = JSON.parse(sessionStorage.getItem(this.outboxKey) || "[]");
    this.fetching = null;
    this.exhausted = false;
    this.sending = false;
    this.retry = 0;
    this.timers = [];
    this.closed = false;
    this.lease = leaseSeconds();
    this.renewEvery = Math.max(1000, Math.min((this.lease * 1000) / 3, 120000));
    this.renewTimer = setInterval(() => this.renew(), this.renewEvery);
    this.onVisible = () => {
      if (document.visibilityState === "visible") this.wake();
    };
    this.onResume = () => this.wake();
    this.onHide = () => this.close({ keepalive: true });
    document.addEventListener("visibilitychange", this.onVisible);
    document.addEventListener("resume", this.onResume);
    window.addEventListener("pagehide", this.onHide);
  }

  get pending() {
    return this.outbox.length;
  }

  // The next live item, fetching more when running low; null when the queue is empty.
  async next() {
    this.dropExpired();
    if (this.waiting.length < AHEAD) {
      const more = this.fill();
      if (!this.waiting.length) await more;
    }
    this.dropExpired();
    const next = this.waiting.shift() || null;
    if (this.waiting.length < AHEAD) this.fill();
    return next;
  }

  // Put an item back at the front (undo brings the last one back on screen).
  unshift(held) {
    if (held) this.waiting.unshift(held);
  }

  fill() {
    if (this.fetching || this.closed) return this.fetching || Promise.resolve();
    this.fetching = (async () => {
      try {
        const batch = await post(this.base, {
          size: BATCH_SIZE,
          queue: this.queue,
          lease_seconds: this.lease,
        });
        if (batch.id === null) {
          this.exhausted = true;
          this.later(() => this.fill(), EMPTY_POLL_MS);
          return;
        }
        this.exhausted = false;
        this.batches.set(batch.id, Date.now() + this.lease * 1000);
        for (const entry of batch.items) {
          if (this.seen.has(entry.item.id)) continue;
          this.seen.add(entry.item.id);
          this.waiting.push({ entry, batchId: batch.id });
        }
      } catch (error) {
        if (!(error instanceof ApiError) || !error.transient) this.onError(error);
        this.later(() => this.fill(), RETRY_MS[2]);
      } finally {
        this.fetching = null;
        this.onChange();
      }
    })();
    return this.fetching;
  }

  later(fn, ms) {
    if (this.closed) return;
    this.timers.push(setTimeout(fn, ms));
  }

  dropExpired() {
    const now = Date.now();
    const expired = new Set(
      [...this.batches].filter(([, until]) => until <= now).map(([id]) => id),
    );
    if (!expired.size) return;
    this.drop((held) => expired.has(held.batchId));
    for (const id of expired) this.batches.delete(id);
  }

  // Forget waiting items whose lease is gone: a later batch may hand them out again.
  drop(lost) {
    for (const held of this.waiting.filter(lost)) this.seen.delete(held.entry.item.id);
    this.waiting = this.waiting.filter((held) => !lost(held));
  }

  // Back from sleep or a hidden tab: drop what expired, renew the rest, send what waits.
  wake() {
    this.dropExpired();
    this.renew();
    this.flush();
    if (this.waiting.length < AHEAD) this.fill();
  }

  async renew() {
    if (this.closed || document.visibilityState !== "visible") return;
    // The item on screen too: its lease is kept while the annotator reads it.
    const held = new Set([...this.waiting, this.current].filter(Boolean).map((w) => w.batchId));
    for (const batchId of held) {
      try {
        const batch = await post(`${this.base}/${batchId}/renew`, { lease_seconds: this.lease });
        const lost = new Set(
          batch.items.filter((e) => e.lease !== "live").map((e) => e.item.id),
        );
        this.drop((w) => w.batchId === batchId && lost.has(w.entry.item.id));
        if (batch.items.some((e) => e.lease === "live")) {
          this.batches.set(batchId, Date.now() + this.lease * 1000);
        }
      } catch (error) {
        if (error instanceof ApiError && !error.transient) {
          this.drop((w) => w.batchId === batchId);
          this.batches.delete(batchId);
        }
      }
    }
    this.onChange();
  }

  // Queue an answer and send it in the background.
  submit(answer) {
    this.outbox.push(answer);
    this.save();
    this.flush();
  }

  // Take back an answer the server has not seen yet (undo before it was sent).
  withdraw(itemId) {
    const index = this.outbox.findIndex((a) => a.item_id === itemId);
    if (index < 0 || (this.sending && index < this.inFlight)) return false;
    this.outbox.splice(index, 1);
    this.save();
    this.onChange();
    return true;
  }

  save() {
    sessionStorage.setItem(this.outboxKey, JSON.stringify(this.outbox));
  }

  async flush({ keepalive = false } = {}) {
    if (this.sending || !this.outbox.length) return;
    this.sending = true;
    this.inFlight = Math.min(this.outbox.length, this.chunk);
    const chunk = this.outbox.slice(0, this.inFlight);
    this.onChange();
    try {
      const results = await this.send(chunk, { keepalive });
      this.outbox.splice(0, chunk.length);
      this.save();
      this.retry = 0;
      results.forEach((result, index) => {
        if (!result.ok) this.onError(new ApiError(422, result.problem || {}), chunk[index]);
      });
    } catch (error) {
      if (error instanceof ApiError && !error.transient && error.status !== 401) {
        // Refused as a whole (e.g. 403, 404): sending it again would not help.
        this.outbox.splice(0, chunk.length);
        this.save();
        this.onError(error, chunk[0]);
      } else {
        const wait = RETRY_MS[Math.min(this.retry, RETRY_MS.length - 1)];
        this.retry += 1;
        this.later(() => this.flush(), wait);
      }
    } finally {
      this.sending = false;
      this.inFlight = 0;
      this.onChange();
    }
    if (this.outbox.length && !this.retry) this.flush({ keepalive });
  }

  async skip(held) {
    try {
      await post(`${this.base}/${held.batchId}/skip`, { item_ids: [held.entry.item.id] });
    } catch (error) {
      if (error.status !== 409 && error.status !== 404) this.onError(error);
    }
  }

  // Send what waits, then give every unanswered item back to the pool.
  async close({ keepalive = false } = {}) {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.renewTimer);
    for (const timer of this.timers) clearTimeout(timer);
    document.removeEventListener("visibilitychange", this.onVisible);
    document.removeEventListener("resume", this.onResume);
    window.removeEventListener("pagehide", this.onHide);
    if (this.fetching) await this.fetching.catch(() => {});
    await this.flush({ keepalive });
    await Promise.all(
      [...this.batches.keys()].map((id) =>
        del(`${this.base}/${id}`, { keepalive }).catch(() => {}),
      ),
    );
  }
}

// How many items are still open for this annotator: unlabeled or in progress, not answered
// by them. Counted from the public item and annotation lists (capped for huge projects).
export async function openCount(projectId, answered) {
  let count = 0;
  let capped = false;
  for (const status of ["unlabeled", "in_progress"]) {
    let cursor = null;
    let pages = 0;
    do {
      const page = await get(`v1/projects/${projectId}/items`, { status, limit: 1000, cursor });
      count += page.items.filter((item) => !answered.has(item.id)).length;
      cursor = page.next_cursor;
      pages += 1;
    } while (cursor && pages < 10);
    if (cursor) capped = true;
  }
  return { count, capped };
}
