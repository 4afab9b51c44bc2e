// Annotate: one item on screen, one keypress per answer; the model's suggestion is never shown
// here (it would bias the answer).

import { all, get, post } from "./api.js";
import { fmt, h, kbd, labelKeys, problemText, replace, shortcuts, toast } from "./dom.js";
import { LeaseQueue, openCount } from "./queue.js";

export function guide(project) {
  return h(
    "aside",
    { class: "guide", "aria-label": "Guidelines" },
    h(
      "details",
      { open: true },
      h("summary", {}, "Guidelines"),
      project.guidelines
        ? h("div", { class: "guidelines" }, project.guidelines)
        : h("p", { class: "muted" }, "This project has no written guidelines."),
      project.examples.length
        ? [
            h("h3", {}, "Examples"),
            h(
              "ul",
              { class: "examples" },
              project.examples.map((example) =>
                h(
                  "li",
                  {},
                  h("span", { class: "badge" }, example.label),
                  " ",
                  example.text,
                  example.note ? h("span", { class: "muted" }, ` — ${example.note}`) : null,
                ),
              ),
            ),
          ]
        : null,
    ),
  );
}

export function keyHelp(rows) {
  return h(
    "details",
    { class: "keys" },
    h("summary", {}, "Keyboard"),
    h(
      "dl",
      {},
      rows.map(([key, meaning]) => [h("dt", {}, h("kbd", {}, key)), h("dd", {}, meaning)]),
    ),
  );
}

// A stopwatch that does not run while the tab is hidden.
class Stopwatch {
  constructor() {
    this.reset();
  }

  reset() {
    this.spent = 0;
    this.since = document.visibilityState === "visible" ? performance.now() : null;
  }

  pause() {
    if (this.since !== null) this.spent += performance.now() - this.since;
    this.since = null;
  }

  resume() {
    if (this.since === null) this.since = performance.now();
  }

  get ms() {
    const running = this.since === null ? 0 : performance.now() - this.since;
    return Math.round(this.spent + running);
  }
}

function startOfToday() {
  const now = new Date();
  return new Date(now.getFullYear(), now.getMonth(), now.getDate());
}

export async function renderAnnotate(main, { projectId, me, setTitle }) {
  const project = await get(`v1/projects/${projectId}`);
  setTitle(`Annotate ${project.name}`);
  const keys = labelKeys(project.labels);
  const byKey = new Map(keys.filter((k) => k.key).map((k) => [k.key, k.label]));

  const itemBox = h("article", {
    id: "item",
    class: "item card",
    tabindex: "-1",
    "aria-live": "polite",
    "aria-label": "Item to label",
  });
  const counter = h("p", { id: "counter", class: "counter" });
  const sync = h("p", { id: "sync", class: "muted" });
  const note = h("textarea", { id: "note", rows: "2", maxlength: "10000" });
  const labelButtons = keys.map(({ label, key }) =>
    h(
      "button",
      {
        type: "button",
        class: "label",
        "data-label": label,
        "aria-keyshortcuts": key || undefined,
        onclick: () => answer({ label, abstain: false }),
      },
      key ? kbd(key) : null,
      h("span", {}, label),
    ),
  );
  const abstainButton = project.allow_abstain
    ? h(
        "button",
        {
          type: "button",
          class: "abstain",
          "aria-keyshortcuts": "i",
          onclick: () => answer({ label: null, abstain: true }),
        },
        kbd("i"),
        h("span", {}, "I don't know"),
      )
    : null;
  const skipButton = h(
    "button",
    { type: "button", "aria-keyshortcuts": "s", onclick: () => skip() },
    kbd("s"),
    h("span", {}, "Skip"),
  );
  const undoButton = h(
    "button",
    { type: "button", "aria-keyshortcuts": "u", disabled: true, onclick: () => undo() },
    kbd("u"),
    h("span", {}, "Undo last answer"),
  );

  replace(
    main,
    h(
      "div",
      { class: "workspace" },
      h(
        "section",
        { class: "work", "aria-labelledby": "annotate-title" },
        h("h1", { id: "annotate-title" }, project.name),
        counter,
        itemBox,
        h("div", { class: "labels", role: "group", "aria-label": "Labels" }, labelButtons),
        h("div", { class: "controls" }, abstainButton, skipButton, undoButton),
        h("label", { for: "note" }, "Note (optional) ", kbd("n")),
        note,
        sync,
      ),
      h(
        "div",
        { class: "side" },
        guide(project),
        keyHelp([
          ["1–9, a…", "answer with the label on the button"],
          project.allow_abstain ? ["i", "I don't know"] : null,
          ["s", "skip this item"],
          ["u", "undo the last answer"],
          ["n", "write a note; Escape to leave it"],
        ].filter(Boolean)),
      ),
    ),
  );

  const stats = { today: 0, left: null, capped: false };
  const answeredIds = new Set();
  let current = null; // {entry, batchId}
  let last = null; // {held, answer, sent}
  let changing = null; // the label being changed (undo of a sent answer)
  const clock = new Stopwatch();

  const queue = new LeaseQueue({
    projectId,
    owner: me.name,
    queue: "label",
    send: async (chunk, options) => {
      const report = await post(`v1/projects/${projectId}/annotations`, chunk, options);
      return report.results.map((r) => ({ ok: r.status !== "failed", problem: r.problem }));
    },
    onChange: () => {
      showSync();
      if (!current && !loading && queue.waiting.length) showNext();
      else if (!current && !loading) render();
    },
    onError: (error, answer) => {
      const which = answer ? ` (item ${answer.item_id})` : "";
      toast(`Not saved${which}: ${problemText(error)}`, "error");
    },
  });

  function showSync() {
    const waiting = queue.pending;
    sync.textContent = waiting
      ? `Saving ${waiting} answer${waiting === 1 ? "" : "s"}…`
      : "All answers saved.";
  }

  function showCounter() {
    const left =
      stats.left === null ? "counting…" : `${fmt.int(stats.left)}${stats.capped ? "+" : ""}`;
    counter.textContent = `Answered today: ${fmt.int(stats.today)} · Left: ${left}`;
  }

  function render() {
    undoButton.disabled = !last;
    for (const button of labelButtons) {
      const pressed = changing && changing.label === button.dataset.label;
      button.setAttribute("aria-pressed", pressed ? "true" : "false");
    }
    if (!current) {
      replace(
        itemBox,
        h(
          "p",
          { class: "empty" },
          queue.exhausted
            ? "Nothing to label right now. New items appear here as they arrive."
            : "Loading the next item…",
        ),
      );
      itemBox.dataset.itemId = "";
      return;
    }
    const item = current.entry.item;
    itemBox.dataset.itemId = String(item.id);
    replace(
      itemBox,
      changing
        ? h(
            "p",
            { class: "changing" },
            `Changing your answer (was: ${changing.abstain ? "I don't know" : changing.label}).`,
          )
        : null,
      h("p", { class: "text" }, item.text),
      item.external_id ? h("p", { class: "muted small" }, `#${item.external_id}`) : null,
    );
  }

  let loading = false;

  async function showNext() {
    if (loading) return;
    loading = true;
    current = null;
    queue.current = null;
    changing = null;
    render();
    let next;
    try {
      next = await queue.next();
    } finally {
      loading = false;
    }
    if (current) {
      queue.unshift(next); // undo put an item on screen meanwhile
      return;
    }
    current = next;
    queue.current = current;
    note.value = "";
    clock.reset();
    render();
    showCounter();
  }

  function answer({ label, abstain }) {
    if (!current) return;
    const item = current.entry.item;
    const sent = {
      item_id: item.id,
      label,
      abstain,
      duration_ms: clock.ms,
      note: note.value.trim() || null,
    };
    queue.submit(sent);
    if (!answeredIds.has(item.id)) {
      answeredIds.add(item.id);
      if (stats.left !== null) stats.left = Math.max(0, stats.left - 1);
    }
    stats.today += 1;
    last = { held: current, answer: sent };
    showNext();
    itemBox.focus({ preventScroll: true });
  }

  function skip() {
    if (!current) return;
    queue.skip(current);
    showNext();
  }

  function undo() {
    if (!last) return;
    const { held, answer: previous } = last;
    last = null;
    if (current) queue.unshift(current);
    stats.today = Math.max(0, stats.today - 1);
    if (queue.withdraw(previous.item_id)) {
      // Never sent: as if it had not been answered.
      answeredIds.delete(previous.item_id);
      if (stats.left !== null) stats.left += 1;
      changing = null;
    } else {
      changing = previous; // the next answer replaces it on the server (a resubmission)
    }
    current = held;
    queue.current = current;
    note.value = previous.note || "";
    clock.reset();
    render();
    showCounter();
    itemBox.focus({ preventScroll: true });
  }

  const stopKeys = shortcuts((event) => {
    const key = event.key.toLowerCase();
    if (byKey.has(key) && !event.ctrlKey) {
      answer({ label: byKey.get(key), abstain: false });
    } else if (key === "i" && project.allow_abstain) {
      answer({ label: null, abstain: true });
    } else if (key === "s") {
      skip();
    } else if (key === "u" || (event.ctrlKey && key === "z")) {
      undo();
    } else if (key === "n") {
      note.focus();
    } else {
      return false;
    }
    return true;
  });
  const onVisibility = () =>
    document.visibilityState === "visible" ? clock.resume() : clock.pause();
  document.addEventListener("visibilitychange", onVisibility);

  showCounter();
  showSync();
  queue.flush(); // answers a previous visit left unsent
  const first = showNext();
  itemBox.focus({ preventScroll: true });

  // The counter: today's answers and what is left, from the public lists.
  (async () => {
    try {
      const mine = await all(`v1/projects/${projectId}/annotations`, { annotator: me.name });
      const since = startOfToday();
      for (const a of mine.items) answeredIds.add(a.item_id);
      stats.today += mine.items.filter((a) => new Date(a.created_at) >= since).length;
      const open = await openCount(projectId, answeredIds);
      stats.left = open.count;
      stats.capped = open.capped;
    } catch (error) {
      if (error.status !== 401) toast(`The counter is unavailable: ${problemText(error)}`);
    }
    showCounter();
  })();

  await first;
  return async () => {
    stopKeys();
    document.removeEventListener("visibilitychange", onVisibility);
    await queue.close();
  };
}
