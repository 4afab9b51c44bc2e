// Building the page: elements from data, never HTML strings (item texts are untrusted).

export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      element.className = value;
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const note = h("div", { class: `toast ${kind}` }, message);
  box.append(note);
  setTimeout(() => note.remove(), kind === "error" ? 8000 : 4000);
}

export function problemText(error) {
  const problem = error.problem || {};
  return problem.detail || problem.title || error.message || "Something went wrong.";
}

export const fmt = {
  int: (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en")),
  num: (n, digits = 2) => (n === null || n === undefined ? "–" : Number(n).toFixed(digits)),
  pct: (n, digits = 0) =>
    n === null || n === undefined ? "–" : `${(Number(n) * 100).toFixed(digits)}%`,
  money: (n) => (n === null || n === undefined ? "–" : Number(n).toFixed(2)),
  when: (iso) => (iso ? new Date(iso).toLocaleString("en-GB") : "–"),
};

// Keyboard shortcuts of the current page; typing in a field is never a shortcut (Escape
// leaves the field instead).
export function shortcuts(handler) {
  const listener = (event) => {
    if (event.defaultPrevented || event.altKey || event.metaKey) return;
    const target = event.target;
    const typing =
      target instanceof HTMLElement &&
      (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
    if (typing) {
      if (event.key === "Escape") {
        target.blur();
        document.getElementById("item")?.focus();
        event.preventDefault();
      }
      return;
    }
    if (event.ctrlKey && event.key.toLowerCase() !== "z") return;
    if (handler(event)) event.preventDefault();
  };
  document.addEventListener("keydown", listener);
  return () => document.removeEventListener("keydown", listener);
}

// The keys for a project's labels, in label order: 1-9, then letters the controls do not use.
const RESERVED = new Set(["i", "s", "n", "u", "z", "x"]);
const LETTERS = [..."abcdefghjklmopqrtvwy"].filter((letter) => !RESERVED.has(letter));

export function labelKeys(labels) {
  const keys = ["1", "2", "3", "4", "5", "6", "7", "8", "9", ...LETTERS];
  return labels.map((label, index) => ({ label, key: keys[index] ?? null }));
}

export function kbd(key) {
  return h("kbd", { "aria-hidden": "true" }, key);
}
