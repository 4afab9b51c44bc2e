// The Labelwise flow through the generated TypeScript client (openapi-typescript types +
// openapi-fetch): create a project, ingest (JSON, and NDJSON by hand), fetch a batch as each
// of two annotators and answer it, read the agreement, train a model and read the job's typed
// result; then upload a file to import (multipart).
// tests/test_clients.py type-checks it under `strict` and runs it against a live server;
// docs/clients.md shows how to build it. Prints a JSON summary on stdout.
//
//   node dist/flow.js <base-url> <admin-key>

import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type TrainModelResult = components["schemas"]["TrainModelResult"];
type ImportFileResult = components["schemas"]["ImportFileResult"];

const [baseUrl, adminKey] = process.argv.slice(2);
if (baseUrl === undefined || adminKey === undefined) {
  throw new Error("usage: node dist/flow.js <base-url> <admin-key>");
}

const clientFor = (key: string) =>
  createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${key}` } });

/** The answer's body, or an error naming the problem the server sent. */
function ok<T>(answer: { data?: T; error?: unknown; response: Response }, what: string): T {
  if (answer.data === undefined) {
    throw new Error(`${what}: ${answer.response.status} ${JSON.stringify(answer.error)}`);
  }
  return answer.data;
}

const admin = clientFor(adminKey);
const suffix = Date.now().toString(36);

async function annotatorKey(name: string): Promise<string> {
  const body = { name: `${name}-${suffix}`, role: "annotator" as const };
  return ok(await admin.POST("/v1/api-keys", { body }), "creating a key").key;
}

async function waitForJob(jobId: number) {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const path = { job_id: jobId };
    const job = ok(await admin.GET("/v1/jobs/{job_id}", { params: { path } }), "polling");
    if (job.status === "succeeded" || job.status === "failed" || job.status === "cancelled") {
      return job;
    }
    if (Date.now() > deadline) throw new Error(`job ${jobId} still ${job.status}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

const annotators = [await annotatorKey("ts-ann"), await annotatorKey("ts-bea")];
const project = ok(
  await admin.POST("/v1/projects", {
    body: { name: `ts-client-${suffix}`, labels: ["bug", "feature"], annotators_per_item: 2 },
  }),
  "creating the project",
);
const path = { project_id: project.id };

const texts = Array.from({ length: 6 }, (_, i) => [
  `The app crashes with error ${i} when I save`,
  `Please add dark mode option ${i} to settings`,
]).flat();
const items = texts.map((text, i) => ({ external_id: `ts-${i}`, text }));
// Half as a JSON array...
const ingest = ok(
  await admin.POST("/v1/projects/{project_id}/items", {
    params: { path },
    body: items.slice(0, 6),
  }),
  "ingesting",
);
// ...half as NDJSON (one item per line), which the generated types cannot express: the same
// call with its own serializer and content type; the answer is still typed.
const streamed = ok(
  await admin.POST("/v1/projects/{project_id}/items", {
    params: { path },
    body: items.slice(6),
    // The body may be typed as either content type's: an array (JSON) or one item (a line).
    bodySerializer: (body) =>
      (Array.isArray(body) ? body : [body]).map((item) => `${JSON.stringify(item)}\n`).join(""),
    headers: { "Content-Type": "application/x-ndjson" },
  }),
  "streaming",
);
// Counts the server always sends are required numbers: no undefined check.
const created: number = ingest.created + streamed.created;

let answered = 0;
for (const key of annotators) {
  const annotator = clientFor(key);
  // Only `size`: every other field has a server default and is optional.
  const batch = ok(
    await annotator.POST("/v1/projects/{project_id}/batches", {
      params: { path },
      body: { size: 12 },
    }),
    "fetching a batch",
  );
  const answers = batch.items.map((item) => ({
    item_id: item.item.id,
    label: item.item.text.includes("crashes") ? "bug" : "feature",
  }));
  const report = ok(
    await annotator.POST("/v1/projects/{project_id}/annotations", {
      params: { path },
      body: answers,
    }),
    "answering",
  );
  answered += report.created;
}

const agreement = ok(
  await admin.GET("/v1/projects/{project_id}/agreement", { params: { path } }),
  "reading the agreement",
);

const accepted = ok(
  await admin.POST("/v1/projects/{project_id}/models", { params: { path }, body: {} }),
  "starting training",
);
const job = await waitForJob(accepted.id);
if (job.status !== "succeeded" || job.result === null || job.result.kind !== "train_model") {
  throw new Error(`training did not succeed: ${JSON.stringify(job)}`);
}
// Narrowed by `kind`: the training result's fields are typed.
const result: TrainModelResult = job.result;

// A file import is its own operation: a multipart upload, `mapping` a JSON part. The spec
// types the file (format: binary) as a string; the body serializer builds the form.
const rows = "body\nThe export button does nothing\nAdd a CSV export\n";
const upload = ok(
  await admin.POST("/v1/projects/{project_id}/imports/upload", {
    params: { path },
    body: { mapping: { text: "body" }, file: rows },
    bodySerializer: (body) => {
      const form = new FormData();
      form.append("mapping", JSON.stringify(body.mapping));
      form.append("file", new Blob([body.file], { type: "text/csv" }), "tickets.csv");
      return form;
    },
  }),
  "uploading",
);
const importJob = await waitForJob(upload.id);
if (importJob.result === null || importJob.result.kind !== "import_file") {
  throw new Error(`the import did not succeed: ${JSON.stringify(importJob)}`);
}
const imported: ImportFileResult = importJob.result;

console.log(
  JSON.stringify({
    project_id: project.id,
    created,
    answered,
    krippendorff_alpha: agreement.krippendorff_alpha,
    band: agreement.interpretation.band,
    job_id: job.id,
    version: result.version,
    model_version: result.model_version,
    macro_f1: result.macro_f1,
    import_job_id: importJob.id,
    imported: imported.items?.created,
  }),
);
