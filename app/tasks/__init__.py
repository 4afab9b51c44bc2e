"""Job code: what runs in the background, beside the request-time services.

One module per domain holds that domain's job functions (`run_*`, each `JobContext ->` its
kind's result model, app/models/job_kinds.py) and the helpers only they use. A service
validates a request and queues the job with its typed params; the runner
(app/jobs/kinds.py) later imports the task module by name and calls its function.

Layering: a task may import services, models, ml, registry, sources and app.jobs.context;
no service imports a task (what both need stays in the service). Nothing here imports
FastAPI. A task module imports only what its own jobs need, and the ML stack on first use,
so a job process holds only that (docs/design.md, "Import weight"): an import job never
loads scikit-learn, cleanlab or openai.
"""
