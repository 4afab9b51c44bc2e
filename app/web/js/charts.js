// Charts (Chart.js, vendored in web/vendor/) with their numbers on hover, and beside each one
// the same numbers as a table: for screen readers, for copying, and for anyone who would
// rather read.

import { h } from "./dom.js";

// Distinguishable for the common colour-vision deficiencies (Okabe & Ito).
export const COLORS = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442"];

let loading = null;

export function loadCharts() {
  if (window.Chart) return Promise.resolve(window.Chart);
  loading ||= new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = new URL("web/vendor/chart.umd.min.js", document.baseURI).href;
    script.onload = () => resolve(window.Chart);
    script.onerror = () => reject(new Error("The chart library could not be loaded."));
    document.head.append(script);
  });
  return loading;
}

let serial = 0;

// A figure: title, a one-line summary, the chart, and its data as a table.
export function figure({ title, summary, config, table, id }) {
  serial += 1;
  const tableId = `table-${serial}`;
  const canvas = h("canvas", { role: "img", "aria-label": `${title}. ${summary || ""} Table follows.` });
  const element = h(
    "figure",
    { class: "chart", id, "data-chart": title },
    h("figcaption", {}, h("h3", {}, title), summary ? h("p", { class: "muted" }, summary) : null),
    config ? h("div", { class: "canvas-box" }, canvas) : null,
    table && table.rows.length
      ? h(
          "details",
          { class: "table-fallback" },
          h("summary", {}, "Table"),
          h(
            "table",
            { id: tableId },
            h("caption", { class: "visually-hidden" }, title),
            h("thead", {}, h("tr", {}, table.headers.map((c) => h("th", { scope: "col" }, c)))),
            h(
              "tbody",
              {},
              table.rows.map((row) =>
                h(
                  "tr",
                  {},
                  row.map((cell, i) => (i === 0 ? h("th", { scope: "row" }, cell) : h("td", {}, cell))),
                ),
              ),
            ),
          ),
        )
      : null,
  );
  const draw = async () => {
    if (!config) return null;
    const Chart = await loadCharts();
    return new Chart(canvas, withDefaults(config));
  };
  return { element, draw };
}

function withDefaults(config) {
  const options = config.options || {};
  return {
    ...config,
    options: {
      animation: false,
      responsive: true,
      maintainAspectRatio: false,
      ...options,
      plugins: {
        legend: { display: (config.data.datasets || []).length > 1 },
        tooltip: { enabled: true },
        ...(options.plugins || {}),
      },
    },
  };
}

export function bar(labels, datasets, options = {}) {
  return {
    type: "bar",
    data: {
      labels,
      datasets: datasets.map((d, i) => ({
        backgroundColor: d.colors || COLORS[i % COLORS.length],
        maxBarThickness: 64,
        ...d,
      })),
    },
    options,
  };
}

export function lines(datasets, { x = "labels", y = "accuracy", yMin, yMax } = {}) {
  return {
    type: "line",
    data: {
      datasets: datasets.map((d, i) => ({
        borderColor: COLORS[i % COLORS.length],
        backgroundColor: COLORS[i % COLORS.length],
        pointRadius: 4,
        ...d,
      })),
    },
    options: {
      parsing: false,
      scales: {
        x: { type: "linear", title: { display: true, text: x } },
        y: { title: { display: true, text: y }, min: yMin, max: yMax },
      },
    },
  };
}
