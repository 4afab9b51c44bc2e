// The shell: sign-in, who you are, the role's navigation, and a hash router over the pages.

import { clearKey, get, getKey, onUnauthorized, setKey } from "./api.js";
import { h, problemText, replace } from "./dom.js";
import { renderAnnotate } from "./annotate.js";
import { renderOverview } from "./overview.js";
import { renderReview } from "./review.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");

const state = { me: null, cleanup: null, projects: null };

// What each role may open (the server enforces it; the app only shows what works).
export function can(me, page) {
  if (!me) return false;
  if (page === "overview" || page === "review") return me.role === "admin" || me.role === "service";
  return true;
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

function setTitle(text) {
  document.title = text ? `${text} · Labelwise` : "Labelwise";
}

function renderNav(projectId) {
  const links = [h("a", { href: "#/projects" }, "Projects")];
  if (projectId) {
    links.push(h("a", { href: `#/annotate/${projectId}` }, "Annotate"));
    if (can(state.me, "review")) links.push(h("a", { href: `#/review/${projectId}` }, "Review"));
    if (can(state.me, "overview")) {
      links.push(h("a", { href: `#/overview/${projectId}` }, "Overview"));
    }
  }
  for (const link of links) {
    if (location.hash === link.getAttribute("href")) link.setAttribute("aria-current", "page");
  }
  replace(nav, links);
  replace(
    who,
    state.me
      ? [
          h("span", { class: "me" }, state.me.name, " ", h("span", { class: "badge" }, state.me.role)),
          state.me.tier ? h("span", { class: "muted" }, ` ${state.me.tier}`) : null,
          h("button", { type: "button", class: "link", onclick: signOut }, "Sign out"),
        ]
      : [],
  );
}

async function signOut() {
  await teardown();
  clearKey();
  state.me = null;
  go("#/");
}

async function teardown() {
  const cleanup = state.cleanup;
  state.cleanup = null;
  if (cleanup) await cleanup();
}

function renderSignIn(message) {
  setTitle("Sign in");
  renderNav(null);
  const error = h("p", { id: "signin-error", class: "error", role: "alert" }, message || "");
  const input = h("input", {
    id: "api-key",
    name: "api-key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "signin-help signin-error",
  });
  const form = h(
    "form",
    {
      class: "card signin",
      onsubmit: async (event) => {
        event.preventDefault();
        const key = input.value.trim();
        if (!key) return;
        setKey(key);
        input.value = "";
        const me = await loadMe();
        if (me) go("#/projects");
      },
    },
    h("h1", {}, "Sign in"),
    h("label", { for: "api-key" }, "API key"),
    input,
    h(
      "p",
      { id: "signin-help", class: "muted" },
      "Your key stays in this tab's session storage and is sent only in the Authorization header.",
    ),
    error,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  replace(main, form);
  input.focus();
}

async function loadMe() {
  try {
    state.me = await get("v1/me");
    return state.me;
  } catch (error) {
    clearKey();
    state.me = null;
    renderSignIn(error.status === 401 ? "That key was not accepted." : problemText(error));
    return null;
  }
}

async function renderProjects() {
  setTitle("Projects");
  renderNav(null);
  const list = h("ul", { class: "projects" });
  replace(main, h("h1", {}, "Projects"), list);
  const page = await get("v1/projects", { limit: 1000 });
  state.projects = page.items;
  if (!page.items.length) {
    replace(list, h("li", { class: "muted" }, "No projects yet."));
    return;
  }
  replace(
    list,
    page.items.map((project) =>
      h(
        "li",
        { class: "card project" },
        h("h2", {}, project.name),
        project.description ? h("p", {}, project.description) : null,
        h(
          "p",
          { class: "muted" },
          `${project.phase} · ${project.labels.length} labels · ${project.annotators_per_item} per item`,
        ),
        h(
          "div",
          { class: "actions" },
          h("a", { class: "button primary", href: `#/annotate/${project.id}` }, "Annotate"),
          can(state.me, "review")
            ? h("a", { class: "button", href: `#/review/${project.id}` }, "Review")
            : null,
          can(state.me, "overview")
            ? h("a", { class: "button", href: `#/overview/${project.id}` }, "Overview")
            : null,
        ),
      ),
    ),
  );
}

function renderForbidden(page) {
  setTitle("Not for your role");
  replace(
    main,
    h(
      "div",
      { class: "card", role: "alert" },
      h("h1", {}, "Not available for your key"),
      h(
        "p",
        {},
        `The ${page} is for admin and service keys; your key's role is ${state.me.role}.`,
      ),
      h("a", { href: "#/projects" }, "Back to the projects"),
    ),
  );
}

async function route() {
  await teardown();
  if (!getKey()) {
    renderSignIn();
    return;
  }
  if (!state.me && !(await loadMe())) return;
  const [, page, id, sub, subId] = location.hash.split("/");
  const projectId = Number(id) || null;
  renderNav(projectId);
  try {
    if (page === "annotate" && projectId) {
      state.cleanup = await renderAnnotate(main, { projectId, me: state.me, setTitle });
    } else if (page === "review" && projectId) {
      if (!can(state.me, "review")) return renderForbidden("review queue");
      const itemId = sub === "item" ? Number(subId) || null : null;
      state.cleanup = await renderReview(main, { projectId, itemId, me: state.me, setTitle });
    } else if (page === "overview" && projectId) {
      if (!can(state.me, "overview")) return renderForbidden("overview");
      state.cleanup = await renderOverview(main, { projectId, me: state.me, setTitle });
    } else {
      await renderProjects();
    }
  } catch (error) {
    if (error.status === 401) return;
    replace(
      main,
      h(
        "div",
        { class: "card", role: "alert" },
        h("h1", {}, "This page could not be loaded"),
        h("p", {}, problemText(error)),
        h("a", { href: "#/projects" }, "Back to the projects"),
      ),
    );
  }
}

onUnauthorized(() => {
  // A key revoked mid-session: back to sign-in, without losing the page's queued answers
  // (they stay in session storage and are sent after the next sign-in).
  if (state.me) {
    state.me = null;
    clearKey();
    teardown().finally(() => renderSignIn("Your key is no longer accepted; sign in again."));
  }
});

window.addEventListener("hashchange", route);
route();
