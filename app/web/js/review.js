// Review: the review queue with its reason, the competing answers and the model's suggestion;
// one keypress decides. Also one item on its own (#/review/{project}/item/{id}), the target
// of the overview's label-issue links.

import { ApiError, get, post } from "./api.js";
import { fmt, h, kbd, labelKeys, problemText, replace, shortcuts, toast } from "./dom.js";
import { guide, keyHelp } from "./annotate.js";
import { LeaseQueue } from "./queue.js";

export const REASONS = {
  low_confidence: "Low confidence: the model was unsure",
  audit: "Audit: a sample of the model's auto-accepts",
  disagreement: "Disagreement: the annotators split",
  abstained: "Abstained: too many “I don't know”",
  label_issue: "Label issue: a report doubts the label",
  production_low_confidence: "Production: a low-confidence prediction",
  production_random: "Production: a random sample",
};

export function reasonText(reason) {
  return REASONS[reason] || (reason ? reason.replaceAll("_", " ") : "Needs review");
}

function answersList(detail) {
  const human = detail.annotations.filter((a) => a.is_current);
  if (!human.length) return h("p", { class: "muted" }, "No answers from people yet.");
  return h(
    "ul",
    { class: "answers" },
    human.map((a) =>
      h(
        "li",
        {},
        h("span", { class: "annotator" }, a.annotator),
        " ",
        a.abstain
          ? h("span", { class: "badge abstained" }, "I don't know")
          : h("span", { class: "badge" }, a.label),
        a.source !== "human" ? h("span", { class: "muted" }, ` (${a.source})`) : null,
        a.note ? h("span", { class: "note" }, ` “${a.note}”`) : null,
      ),
    ),
  );
}

export async function renderReview(main, { projectId, itemId, me, setTitle }) {
  const project = await get(`v1/projects/${projectId}`);
  setTitle(`Review ${project.name}`);
  const keys = labelKeys(project.labels);
  const byKey = new Map(keys.filter((k) => k.key).map((k) => [k.key, k.label]));
  const single = itemId !== null;

  const itemBox = h("article", {
    id: "item",
    class: "item card",
    tabindex: "-1",
    "aria-live": "polite",
    "aria-label": "Item to review",
  });
  const reason = h("p", { id: "reason", class: "reason" });
  const suggestion = h("p", { id: "suggestion", class: "suggestion" });
  const answers = h("div", { id: "answers" });
  const status = h("p", { id: "sync", class: "muted" });
  const note = h("textarea", { id: "note", rows: "2", maxlength: "10000" });
  const labelButtons = keys.map(({ label, key }) =>
    h(
      "button",
      {
        type: "button",
        class: "label",
        "data-label": label,
        "aria-keyshortcuts": key || undefined,
        onclick: () => decide(label),
      },
      key ? kbd(key) : null,
      h("span", {}, label),
      h("span", { class: "votes" }),
    ),
  );
  const acceptButton = h(
    "button",
    { type: "button", "aria-keyshortcuts": "Enter", disabled: true, onclick: () => accept() },
    kbd("Enter"),
    h("span", {}, "Accept the suggestion"),
  );
  const skipButton = single
    ? null
    : h(
        "button",
        { type: "button", "aria-keyshortcuts": "s", onclick: () => skip() },
        kbd("s"),
        h("span", {}, "Skip"),
      );

  replace(
    main,
    h(
      "div",
      { class: "workspace" },
      h(
        "section",
        { class: "work", "aria-labelledby": "review-title" },
        h("h1", { id: "review-title" }, single ? `Review item ${itemId}` : `Review ${project.name}`),
        reason,
        itemBox,
        h("h2", { class: "small-heading" }, "Answers"),
        answers,
        suggestion,
        h("div", { class: "labels", role: "group", "aria-label": "Decide the label" }, labelButtons),
        h("div", { class: "controls" }, acceptButton, skipButton),
        h("label", { for: "note" }, "Note (optional) ", kbd("n")),
        note,
        status,
      ),
      h(
        "div",
        { class: "side" },
        guide(project),
        keyHelp([
          ["1–9, a…", "decide: the label on the button"],
          ["Enter", "accept the model's suggestion"],
          single ? null : ["s", "skip this item"],
          ["n", "write a note; Escape to leave it"],
        ].filter(Boolean)),
      ),
    ),
  );

  let current = null; // {entry, batchId} (single: a synthetic entry)
  let loading = false;
  const details = new Map();

  function detailOf(id) {
    if (!details.has(id)) {
      const loaded = get(`v1/projects/${projectId}/items/${id}`);
      loaded.catch(() => details.delete(id));
      details.set(id, loaded);
    }
    return details.get(id);
  }

  const queue = single
    ? null
    : new LeaseQueue({
        projectId,
        owner: me.name,
        queue: "review",
        chunk: 1,
        send: async ([decision], options) => {
          try {
            await post(`v1/projects/${projectId}/reviews`, decision, options);
            return [{ ok: true }];
          } catch (error) {
            if (error instanceof ApiError && (error.transient || error.status === 401)) throw error;
            return [{ ok: false, problem: error.problem }];
          }
        },
        onChange: () => {
          showStatus();
          if (!current && !loading && queue.waiting.length) showNext();
          else if (!current && !loading) render();
        },
        onError: (error, decision) => {
          const which = decision ? ` (item ${decision.item_id})` : "";
          toast(`Decision not saved${which}: ${problemText(error)}`, "error");
        },
      });

  function showStatus() {
    if (!queue) return;
    const waiting = queue.pending;
    const left = queue.waiting.length + (current ? 1 : 0);
    status.textContent =
      (waiting ? `Saving ${waiting} decision${waiting === 1 ? "" : "s"}… ` : "All decisions saved. ") +
      (queue.exhausted && !left ? "The review queue is empty." : "");
  }

  function render() {
    for (const button of labelButtons) {
      button.classList.remove("suggested");
      button.querySelector(".votes").textContent = "";
    }
    if (!current) {
      itemBox.dataset.itemId = "";
      replace(
        itemBox,
        h(
          "p",
          { class: "empty" },
          queue && queue.exhausted
            ? "Nothing to review right now."
            : "Loading the next item…",
        ),
      );
      replace(reason);
      replace(suggestion);
      replace(answers);
      acceptButton.disabled = true;
      return;
    }
    const { entry } = current;
    const item = entry.item;
    itemBox.dataset.itemId = String(item.id);
    replace(itemBox, h("p", { class: "text" }, item.text));
    replace(reason, h("span", { class: "badge reason" }, reasonText(entry.review_reason)));
    const suggested = entry.suggested_label;
    acceptButton.disabled = !suggested;
    replace(
      suggestion,
      suggested
        ? [
            "Model suggests ",
            h("strong", {}, suggested),
            entry.confidence !== null && entry.confidence !== undefined
              ? ` (confidence ${fmt.pct(entry.confidence)})`
              : "",
          ]
        : h("span", { class: "muted" }, "No model suggestion."),
    );
    for (const button of labelButtons) {
      if (button.dataset.label === suggested) button.classList.add("suggested");
    }
    replace(answers, h("p", { class: "muted" }, "Loading the answers…"));
    const shown = current;
    detailOf(item.id)
      .then((detail) => {
        if (current !== shown) return;
        replace(answers, answersList(detail));
        const votes = {};
        for (const a of detail.annotations) if (a.label) votes[a.label] = (votes[a.label] || 0) + 1;
        for (const button of labelButtons) {
          const n = votes[button.dataset.label];
          button.querySelector(".votes").textContent = n ? ` ×${n}` : "";
        }
      })
      .catch((error) => {
        if (current === shown) replace(answers, h("p", { class: "error" }, problemText(error)));
      });
  }

  async function showNext() {
    if (loading) return;
    loading = true;
    current = null;
    render();
    try {
      current = await queue.next();
    } finally {
      loading = false;
    }
    queue.current = current;
    note.value = "";
    render();
    showStatus();
    for (const held of queue.waiting.slice(0, 2)) detailOf(held.entry.item.id);
  }

  async function decide(label) {
    if (!current) return;
    const decision = { item_id: current.entry.item.id, label, note: note.value.trim() || null };
    if (single) {
      try {
        await post(`v1/projects/${projectId}/reviews`, decision);
        replace(
          status,
          `Decided: ${label}. `,
          h("a", { href: `#/overview/${projectId}` }, "Back to the overview"),
        );
        current = null;
        replace(itemBox, h("p", { class: "empty" }, `Item ${itemId} is decided: ${label}.`));
        for (const button of labelButtons) button.disabled = true;
        acceptButton.disabled = true;
      } catch (error) {
        toast(`Decision not saved: ${problemText(error)}`, "error");
      }
      return;
    }
    queue.submit(decision);
    showNext();
    itemBox.focus({ preventScroll: true });
  }

  function accept() {
    if (current?.entry.suggested_label) decide(current.entry.suggested_label);
  }

  function skip() {
    if (!current || single) return;
    queue.skip(current);
    showNext();
  }

  const stopKeys = shortcuts((event) => {
    const key = event.key.toLowerCase();
    if (byKey.has(key) && !event.ctrlKey) decide(byKey.get(key));
    else if (event.key === "Enter" && !event.target.closest?.("a, button, summary")) accept();
    else if (key === "s" && !single) skip();
    else if (key === "n") note.focus();
    else return false;
    return true;
  });

  if (single) {
    const detail = await detailOf(itemId);
    current = {
      entry: {
        item: detail,
        review_reason: detail.review_reason,
        suggested_label: detail.suggested_label,
        confidence: detail.suggestion_confidence,
      },
    };
    render();
    if (detail.resolved_label) {
      status.textContent = `Current label: ${detail.resolved_label} (by ${detail.resolved_by}).`;
    }
  } else {
    queue.flush();
    await showNext();
  }
  itemBox.focus({ preventScroll: true });

  return async () => {
    stopKeys();
    if (queue) await queue.close();
  };
}
