"""One function per job kind; every runner looks them up here.

Each function is named as "module:function" and imported the first time a job of its kind
runs. A job process then holds only what its jobs need: an import job never loads
scikit-learn, cleanlab or the openai client (bench/import_jsonl.py measures its peak RSS).
"""

import importlib
from collections.abc import Iterator, Mapping

from app.jobs.execute import JobFunction
from app.models.job import JobKind

_FUNCTION_PATHS: dict[str, str] = {
    JobKind.train_model: "app.services.model_versions:run_training",
    JobKind.prelabel: "app.services.prelabels:run_prelabel",
    JobKind.score_pool: "app.services.scoring:run_score_pool",
    JobKind.simulate_active_learning: "app.services.active_learning:run_simulation",
    JobKind.apply_consensus: "app.services.consensus:run_apply_consensus",
    JobKind.label_issues: "app.services.label_issues:run_report",
    JobKind.synthetic: "app.services.synthetic:run_generation",
    JobKind.import_file: "app.services.imports:run_file_import",
    JobKind.import_sql: "app.services.imports:run_sql_import",
    JobKind.import_click_logs: "app.services.click_logs:run_click_logs_import",
}


class _JobFunctions(Mapping[str, JobFunction]):
    def __getitem__(self, kind: str) -> JobFunction:
        module_name, _, function_name = _FUNCTION_PATHS[kind].partition(":")
        function: JobFunction = getattr(importlib.import_module(module_name), function_name)
        return function

    def __iter__(self) -> Iterator[str]:
        return iter(_FUNCTION_PATHS)

    def __len__(self) -> int:
        return len(_FUNCTION_PATHS)


JOB_FUNCTIONS: Mapping[str, JobFunction] = _JobFunctions()
