// Overview (admin and service keys): the project at a glance, every picture from a public
// /v1 endpoint, each with its numbers on hover and as a table.

import { get } from "./api.js";
import { bar, COLORS, figure, lines } from "./charts.js";
import { fmt, h, problemText, replace } from "./dom.js";

const STATUSES = ["unlabeled", "in_progress", "needs_review", "labeled"];
const JOB_REFRESH_MS = 2000;

function section(id, title, ...children) {
  return h(
    "section",
    { class: "panel", id, "aria-labelledby": `${id}-title` },
    h("h2", { id: `${id}-title` }, title),
    ...children,
  );
}

function warnings(list, kind = "warning") {
  if (!list.length) return null;
  return h(
    "ul",
    { class: `callouts ${kind}` },
    list.map((text) => h("li", {}, h("strong", {}, kind === "warning" ? "Warning: " : ""), text)),
  );
}

function numbers(pairs) {
  return h(
    "dl",
    { class: "numbers" },
    pairs.map(([name, value]) => h("div", {}, h("dt", {}, name), h("dd", {}, value))),
  );
}

function failed(error) {
  return h("p", { class: "error" }, `Not available: ${problemText(error)}`);
}

// --- sections ----------------------------------------------------------------------------

function itemsSection(stats, figures) {
  const counts = STATUSES.map((s) => stats.items_by_status[s] || 0);
  const status = figure({
    title: "Items by status",
    id: "chart-status",
    summary: `${fmt.int(stats.n_items)} items; ${STATUSES.map((s, i) => `${counts[i]} ${s.replace("_", " ")}`).join(", ")}.`,
    config: bar(
      STATUSES.map((s) => s.replace("_", " ")),
      [{ label: "items", data: counts, colors: ["#999999", "#E69F00", "#D55E00", "#009E73"] }],
    ),
    table: { headers: ["Status", "Items"], rows: STATUSES.map((s, i) => [s, counts[i]]) },
  });
  const labels = stats.label_distribution;
  const distribution = figure({
    title: "Label distribution",
    id: "chart-labels",
    summary: labels.length
      ? `Resolved labels of ${fmt.int(labels.reduce((n, l) => n + l.count, 0))} items` +
        (stats.imbalance_ratio ? `; imbalance ratio ${fmt.num(stats.imbalance_ratio, 1)}.` : ".")
      : "No resolved labels yet.",
    config: labels.length
      ? bar(
          labels.map((l) => l.label),
          [{ label: "items", data: labels.map((l) => l.count) }],
        )
      : null,
    table: {
      headers: ["Label", "Items", "Share"],
      rows: labels.map((l) => [l.label, l.count, fmt.pct(l.share, 1)]),
    },
  });
  figures.push(status, distribution);
  return section(
    "items",
    "Items and labels",
    numbers([
      ["Items", fmt.int(stats.n_items)],
      ["Answers", fmt.int(stats.n_annotations)],
      ["Abstain rate", fmt.pct(stats.abstain_rate, 1)],
    ]),
    warnings(stats.warnings),
    h("div", { class: "grid" }, status.element, distribution.element),
  );
}

function agreementSection(report, figures) {
  const alpha = report.krippendorff_alpha;
  const ci = report.confidence_interval;
  const parts = [];
  parts.push(
    numbers([
      ["Krippendorff's alpha", fmt.num(alpha, 3)],
      ["95% interval", ci ? `${fmt.num(ci.low, 3)} – ${fmt.num(ci.high, 3)}` : "–"],
      ["Threshold", fmt.num(report.agreement_threshold, 2)],
      ["Items compared", fmt.int(report.n_pairable_items)],
    ]),
  );
  parts.push(
    h(
      "p",
      { class: `band ${report.interpretation.band}` },
      h("strong", {}, report.interpretation.band.replaceAll("_", " ")),
      ": ",
      report.interpretation.summary,
    ),
  );
  parts.push(warnings(report.warnings.map((w) => w.message)));
  const grid = h("div", { class: "grid" });
  parts.push(grid);
  if (alpha !== null) {
    const low = ci ? ci.low : alpha;
    const high = ci ? ci.high : alpha;
    const interval = figure({
      title: "Agreement: alpha and its interval",
      id: "chart-alpha",
      summary: `Alpha ${fmt.num(alpha, 3)}${ci ? `, 95% interval ${fmt.num(low, 3)} to ${fmt.num(high, 3)}` : ""}; threshold ${fmt.num(report.agreement_threshold, 2)}.`,
      config: {
        type: "bar",
        data: {
          labels: ["alpha"],
          datasets: [
            { label: "95% interval", data: [[low, high]], backgroundColor: "#56B4E9", grouped: false },
            { label: "alpha", data: [[alpha - 0.004, alpha + 0.004]], backgroundColor: "#000000", grouped: false },
            {
              label: "threshold",
              data: [[report.agreement_threshold - 0.004, report.agreement_threshold + 0.004]],
              backgroundColor: "#D55E00",
              grouped: false,
            },
          ],
        },
        options: {
          indexAxis: "y",
          scales: { x: { min: Math.min(0, low), max: 1 } },
          plugins: {
            tooltip: {
              callbacks: {
                label: (context) => {
                  const [a, b] = context.raw;
                  if (context.datasetIndex === 0) return `95% interval: ${fmt.num(a, 3)} – ${fmt.num(b, 3)}`;
                  return `${context.dataset.label}: ${fmt.num((a + b) / 2, 3)}`;
                },
              },
            },
          },
        },
      },
      table: {
        headers: ["Statistic", "Value"],
        rows: [
          ["Krippendorff's alpha", fmt.num(alpha, 3)],
          ["Interval low", ci ? fmt.num(ci.low, 3) : "–"],
          ["Interval high", ci ? fmt.num(ci.high, 3) : "–"],
          ["Threshold", fmt.num(report.agreement_threshold, 2)],
          ["Fleiss' kappa", fmt.num(report.fleiss_kappa, 3)],
          ["Percent agreement", fmt.pct(report.percent_agreement, 1)],
        ],
      },
    });
    figures.push(interval);
    grid.append(interval.element);
  }
  const people = report.per_annotator;
  const perAnnotator = figure({
    title: "Agreement per annotator",
    id: "chart-annotators",
    summary: people.length
      ? "How often each annotator agrees with the others on shared items."
      : "No annotator has answered shared items yet.",
    config: people.length
      ? bar(
          people.map((p) => p.annotator),
          [{ label: "agreement with others", data: people.map((p) => p.agreement_with_others) }],
          { scales: { y: { min: 0, max: 1 } } },
        )
      : null,
    table: {
      headers: ["Annotator", "Agreement with others", "Compared", "Labels", "Abstain rate"],
      rows: people.map((p) => [
        p.annotator,
        fmt.pct(p.agreement_with_others, 1),
        p.n_compared,
        p.n_labels,
        fmt.pct(p.abstain_rate, 1),
      ]),
    },
  });
  figures.push(perAnnotator);
  grid.append(perAnnotator.element);
  const confused = report.warnings.find((w) => w.code === "confused_labels");
  const pairs = confused ? confused.evidence.pairs : [];
  const pairFigure = figure({
    title: "Most confused label pairs",
    id: "chart-confused",
    summary: pairs.length
      ? "The label pairs that take the largest share of all disagreement."
      : "None reported: the agreement report names confused pairs when alpha is below the threshold.",
    config: pairs.length
      ? bar(
          pairs.map((p) => p.labels.join(" vs ")),
          [{ label: "share of disagreement", data: pairs.map((p) => p.share_of_disagreement) }],
          { indexAxis: "y" },
        )
      : null,
    table: {
      headers: ["Pair", "Disagreements", "Share of disagreement"],
      rows: pairs.map((p) => [p.labels.join(" vs "), fmt.num(p.disagreements, 1), fmt.pct(p.share_of_disagreement, 1)]),
    },
  });
  figures.push(pairFigure);
  grid.append(pairFigure.element);
  return section("agreement", "Agreement", ...parts);
}

function modelSection(models, learning, figures) {
  const online = learning.exploration
    .filter((e) => e.accuracy !== null && e.n_train !== null)
    .sort((a, b) => a.n_train - b.n_train);
  const versions = [...models].sort((a, b) => a.n_train - b.n_train || a.version - b.version);
  const curve = figure({
    title: "Learning curve",
    id: "chart-learning",
    summary: versions.length
      ? `Accuracy by labels trained on, per model version: measured on the answered random share (${online.length} version${online.length === 1 ? "" : "s"} with answers) and cross-validated at training (${versions.length}).`
      : "No model trained yet.",
    config: versions.length
      ? lines(
          [
            {
              label: "accuracy on the random share",
              data: online.map((e) => ({ x: e.n_train, y: e.accuracy, version: e.model_version })),
            },
            {
              label: "cross-validated accuracy",
              data: versions.map((m) => ({ x: m.n_train, y: m.metrics.accuracy, version: m.model_version })),
              borderDash: [6, 4],
            },
          ],
          { x: "labels trained on", y: "accuracy", yMin: 0, yMax: 1 },
        )
      : null,
    table: {
      headers: ["Version", "Labels", "Cross-validated accuracy", "Macro-F1", "Random-share accuracy", "Random items answered"],
      rows: versions.map((m) => {
        const measured = learning.exploration.find((e) => e.model_version === m.model_version);
        return [
          `${m.model_version}${m.active ? " (active)" : ""}`,
          m.n_train,
          fmt.pct(m.metrics.accuracy, 1),
          fmt.num(m.metrics.macro_f1, 3),
          measured && measured.accuracy !== null
            ? `${fmt.pct(measured.accuracy, 1)} (${fmt.pct(measured.ci_low, 0)}–${fmt.pct(measured.ci_high, 0)})`
            : "–",
          measured ? measured.answered : 0,
        ];
      }),
    },
  });
  figures.push(curve);
  const simulation = learning.simulation;
  const curves = simulation ? simulation.result.curves || {} : {};
  const strategies = Object.keys(curves);
  const replay = figure({
    title: "Active-learning replay",
    id: "chart-replay",
    summary: simulation
      ? simulation.result.summary || `Replay of job ${simulation.job_id}.`
      : "No replay yet (POST …/active-learning/simulations runs one).",
    config: strategies.length
      ? lines(
          strategies.map((name) => ({
            label: name,
            data: curves[name].map(([x, y]) => ({ x, y })),
            borderDash: name === "random" ? [6, 4] : undefined,
          })),
          { x: "labels", y: "accuracy" },
        )
      : null,
    table: {
      headers: ["Strategy", "Labels", "Accuracy"],
      rows: strategies.flatMap((name) => curves[name].map(([x, y]) => [name, x, fmt.pct(y, 1)])),
    },
  });
  figures.push(replay);
  return section("model", "Model", h("div", { class: "grid" }, curve.element, replay.element));
}

function costSection(cost, figures) {
  const tiers = cost.tiers;
  const perTier = figure({
    title: "Spend per tier",
    id: "chart-cost",
    summary: `Total ${fmt.money(cost.total_spend)} for ${fmt.int(cost.paid_answers)} answers.`,
    config: tiers.length
      ? bar(
          tiers.map((t) => t.tier || "no tier"),
          [{ label: "spend", data: tiers.map((t) => t.spend || 0) }],
        )
      : null,
    table: {
      headers: ["Tier", "Answers", "Unit price", "Spend"],
      rows: tiers.map((t) => [t.tier || "no tier", t.answers, fmt.money(t.unit_price), fmt.money(t.spend)]),
    },
  });
  const kinds = ["useful", "abstains", "replaced", "disagreement", "unresolved"];
  const where = figure({
    title: "Where the answers went",
    id: "chart-answers",
    summary: `${fmt.int(cost.usable_labels)} usable labels; ${fmt.int(cost.wasted_answers)} answers were waste.`,
    config: bar(kinds, [{ label: "answers", data: kinds.map((k) => cost.answers[k].answers) }]),
    table: {
      headers: ["Answers", "Count", "Spend"],
      rows: kinds.map((k) => [k, cost.answers[k].answers, fmt.money(cost.answers[k].spend)]),
    },
  });
  figures.push(perTier, where);
  return section(
    "cost",
    "Cost",
    numbers([
      ["Total spend", fmt.money(cost.total_spend)],
      ["Usable labels", fmt.int(cost.usable_labels)],
      ["Cost per usable label", fmt.money(cost.cost_per_usable_label)],
      ["Wasted spend", fmt.money(cost.wasted_spend)],
    ]),
    warnings(cost.warnings),
    h("div", { class: "grid" }, perTier.element, where.element),
  );
}

function issuesSection(projectId, report, figures) {
  if (!report) {
    return section(
      "issues",
      "Label issues",
      h("p", { class: "muted" }, "No label-issue report yet (POST …/label-issues runs one)."),
    );
  }
  const types = Object.entries(report.counts);
  const counts = figure({
    title: "Suspected issues by type",
    id: "chart-issues",
    summary: `Report ${report.id}: ${fmt.int(report.n_issues)} issues among ${fmt.int(report.n_items)} items.`,
    config: types.length
      ? bar(types.map(([t]) => t.replaceAll("_", " ")), [{ label: "issues", data: types.map(([, n]) => n) }])
      : null,
    table: { headers: ["Type", "Issues"], rows: types },
  });
  figures.push(counts);
  const top = h(
    "table",
    { class: "top-issues" },
    h("caption", {}, "Top suspected mislabels, worst first"),
    h(
      "thead",
      {},
      h("tr", {}, ["Rank", "Item", "Given", "Suggested", "Severity", "Change", ""].map((c) => h("th", { scope: "col" }, c))),
    ),
    h(
      "tbody",
      {},
      report.items.map((issue) =>
        h(
          "tr",
          {},
          h("th", { scope: "row" }, issue.rank),
          h("td", {}, issue.item_id),
          h("td", {}, issue.given_label),
          h("td", {}, `${issue.suggested_label} (${fmt.pct(issue.suggestion_confidence)})`),
          h("td", {}, fmt.num(issue.severity, 2)),
          h("td", {}, issue.change || "–"),
          h("td", {}, h("a", { href: `#/review/${projectId}/item/${issue.item_id}` }, `Review item ${issue.item_id}`)),
        ),
      ),
    ),
  );
  return section(
    "issues",
    "Label issues",
    numbers([
      ["Flags reviewed", `${report.flag_review.reviewed} of ${report.flag_review.flagged}`],
      ["Flag precision", fmt.pct(report.flag_review.precision, 0)],
    ]),
    h("div", { class: "grid" }, counts.element, h("div", { class: "scroll" }, top)),
  );
}

function datasetsSection(versions, diffs, figures) {
  if (!versions.length) {
    return section(
      "datasets",
      "Dataset versions",
      h("p", { class: "muted" }, "No dataset version frozen yet (POST …/dataset-versions)."),
    );
  }
  const changes = ["added", "removed", "relabeled", "text_changed"];
  const diffFigure = figure({
    title: "Changes between versions",
    id: "chart-diffs",
    summary: diffs.length
      ? "Each version against the one before it."
      : "Only one version: nothing to compare yet.",
    config: diffs.length
      ? {
          type: "bar",
          data: {
            labels: diffs.map((d) => `v${d.against} → v${d.version}`),
            datasets: changes.map((c, i) => ({
              label: c.replace("_", " "),
              data: diffs.map((d) => d[c]),
              backgroundColor: COLORS[i],
            })),
          },
          options: { scales: { x: { stacked: true }, y: { stacked: true } } },
        }
      : null,
    table: {
      headers: ["Versions", ...changes.map((c) => c.replace("_", " ")), "unchanged"],
      rows: diffs.map((d) => [`v${d.against} → v${d.version}`, ...changes.map((c) => d[c]), d.unchanged]),
    },
  });
  figures.push(diffFigure);
  const table = h(
    "table",
    {},
    h("caption", {}, "Dataset versions, newest first"),
    h("thead", {}, h("tr", {}, ["Version", "Name", "Items", "Labels", "Created"].map((c) => h("th", { scope: "col" }, c)))),
    h(
      "tbody",
      {},
      versions.map((v) =>
        h(
          "tr",
          {},
          h("th", { scope: "row" }, `v${v.version}`),
          h("td", {}, v.name || "–"),
          h("td", {}, fmt.int(v.n_items)),
          h("td", {}, Object.entries(v.label_distribution).map(([l, n]) => `${l} ${n}`).join(", ")),
          h("td", {}, fmt.when(v.created_at)),
        ),
      ),
    ),
  );
  return section("datasets", "Dataset versions", h("div", { class: "grid" }, h("div", { class: "scroll" }, table), diffFigure.element));
}

function jobsList(jobs) {
  if (!jobs.length) return h("p", { class: "muted" }, "No jobs running or queued.");
  return h(
    "ul",
    { class: "jobs" },
    jobs.map((job) => {
      const id = `job-${job.id}`;
      return h(
        "li",
        {},
        h("label", { for: id }, `${job.kind.replaceAll("_", " ")} #${job.id} (${job.status}) ${fmt.pct(job.progress)}`),
        h("progress", { id, max: "1", value: String(job.progress) }, fmt.pct(job.progress)),
      );
    }),
  );
}

async function jobsInFlight(projectId) {
  const [running, queued] = await Promise.all([
    get("v1/jobs", { project_id: projectId, status: "running", limit: 100 }),
    get("v1/jobs", { project_id: projectId, status: "queued", limit: 100 }),
  ]);
  return [...running.items, ...queued.items];
}

function projectLine(project) {
  const perItem =
    project.phase === "pilot" ? Math.max(2, project.annotators_per_item) : project.annotators_per_item;
  return `${project.phase} · labels ${project.labels.join(", ")} · ${perItem} annotators per item`;
}

// --- the page ----------------------------------------------------------------------------

export async function renderOverview(main, { projectId, setTitle }) {
  const project = await get(`v1/projects/${projectId}`);
  setTitle(`Overview ${project.name}`);
  const base = `v1/projects/${projectId}`;
  const jobsBox = h("div", { id: "jobs-list", "aria-live": "polite" }, h("p", { class: "muted" }, "Loading…"));
  replace(
    main,
    h("h1", {}, `Overview: ${project.name}`),
    h("p", { class: "muted" }, projectLine(project)),
    h("p", { class: "muted" }, "Loading the figures…"),
  );

  const calls = {
    stats: get(`${base}/stats`),
    agreement: get(`${base}/agreement`),
    models: get(`${base}/models`, { limit: 100 }),
    learning: get(`${base}/active-learning`),
    cost: get(`${base}/cost`),
    issues: get(`${base}/label-issues`, { limit: 1 }).then((page) =>
      page.items.length ? get(`${base}/label-issues/${page.items[0].id}`, { limit: 10 }) : null,
    ),
    versions: get(`${base}/dataset-versions`, { limit: 10 }).then(async (page) => {
      const diffs = await Promise.all(
        page.items
          .filter((v) => v.version > 1)
          .map((v) => get(`${base}/dataset-versions/${v.version}/diff`, { against: v.version - 1, limit: 1 })),
      );
      return { versions: page.items, diffs: diffs.reverse() };
    }),
    jobs: jobsInFlight(projectId),
  };
  const names = Object.keys(calls);
  const settled = await Promise.allSettled(Object.values(calls));
  const result = Object.fromEntries(names.map((name, i) => [name, settled[i]]));
  const figures = [];
  const build = (name, fn) =>
    result[name].status === "fulfilled" ? fn(result[name].value) : failed(result[name].reason);

  replace(jobsBox, build("jobs", jobsList));
  replace(
    main,
    h("h1", {}, `Overview: ${project.name}`),
    h(
      "p",
      { class: "muted" },
      `${projectLine(project)} · `,
      h("a", { href: `#/review/${projectId}` }, "open the review queue"),
    ),
    build("stats", (stats) => itemsSection(stats, figures)),
    build("agreement", (report) => agreementSection(report, figures)),
    result.models.status === "fulfilled" && result.learning.status === "fulfilled"
      ? modelSection(result.models.value.items, result.learning.value, figures)
      : failed(result.models.reason || result.learning.reason),
    build("cost", (cost) => costSection(cost, figures)),
    build("issues", (report) => issuesSection(projectId, report, figures)),
    build("versions", ({ versions, diffs }) => datasetsSection(versions, diffs, figures)),
    section("jobs", "Jobs in flight", jobsBox),
  );
  const charts = [];
  try {
    for (const f of figures) {
      const chart = await f.draw();
      if (chart) charts.push(chart);
    }
  } catch (error) {
    main.prepend(h("p", { class: "error", role: "alert" }, problemText(error)));
  }
  main.dataset.charts = String(charts.length);

  let stopped = false;
  const refresh = setInterval(async () => {
    try {
      const jobs = await jobsInFlight(projectId);
      if (!stopped) replace(jobsBox, jobsList(jobs));
    } catch {
      // the next tick tries again
    }
  }, JOB_REFRESH_MS);
  return () => {
    stopped = true;
    clearInterval(refresh);
    for (const chart of charts) chart.destroy();
  };
}
