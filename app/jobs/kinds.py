"""One function per job kind; every runner looks them up here."""

from app.jobs.execute import JobFunction
from app.models.job import JobKind
from app.services.active_learning import run_simulation
from app.services.click_logs import run_click_logs_import
from app.services.consensus import run_apply_consensus
from app.services.imports import run_file_import, run_sql_import
from app.services.label_issues import run_report
from app.services.models import run_training
from app.services.prelabels import run_prelabel
from app.services.scoring import run_score_pool
from app.services.synthetic import run_generation

JOB_FUNCTIONS: dict[str, JobFunction] = {
    JobKind.train_model: run_training,
    JobKind.prelabel: run_prelabel,
    JobKind.score_pool: run_score_pool,
    JobKind.simulate_active_learning: run_simulation,
    JobKind.apply_consensus: run_apply_consensus,
    JobKind.label_issues: run_report,
    JobKind.synthetic: run_generation,
    JobKind.import_file: run_file_import,
    JobKind.import_sql: run_sql_import,
    JobKind.import_click_logs: run_click_logs_import,
}
