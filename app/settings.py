"""One settings object for the whole service, read from LABELWISE_* environment variables."""

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# An origin as a browser sends it: scheme://host[:port], no path, no trailing slash.
ORIGIN = re.compile(r"^[a-z][a-z0-9+.-]*://[^/?#\s]+$")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABELWISE_", extra="ignore")

    data_dir: Path = Path("./data")
    # Empty means "a SQLite file in data_dir"; set a postgresql+psycopg:// URL to scale out.
    database_url: str = ""
    bootstrap_admin_key: str | None = None

    max_body_bytes: int = Field(default=50 * 1024 * 1024, ge=1)
    max_items_per_request: int = Field(default=10_000, ge=1)
    max_text_chars: int = Field(default=100_000, ge=1)
    max_ndjson_line_bytes: int = Field(default=1024 * 1024, ge=1)
    ingest_chunk_size: int = Field(default=2_000, ge=1)
    default_page_size: int = Field(default=100, ge=1)
    max_page_size: int = Field(default=1_000, ge=1)
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0)
    log_level: str = "INFO"

    # Jobs: "inprocess" runs them in child processes of the API process; "procrastinate" leaves them
    # to `labelwise worker` processes (PostgreSQL only).
    job_runner: Literal["inprocess", "procrastinate"] = "inprocess"
    job_processes: int = Field(default=1, ge=1, le=16)
    job_stale_seconds: int = Field(default=60, ge=10)
    # How long a runner retries claiming, finishing or failing a job while the database is
    # away (a lost connection, a restart, a held lock) before it leaves the job to the
    # stale-job sweep (running) or to the next re-enqueue (queued): docs/jobs.md.
    job_fault_retry_seconds: float = Field(default=30.0, ge=0, le=600)
    # How often each API process asks whether a project with retrain_after_labels is due.
    retrain_check_seconds: float = Field(default=5.0, gt=0, le=3600)
    # The model registry: loaded versions kept in memory, pool scoring chunk size.
    model_cache_size: int = Field(default=4, ge=1)
    scoring_chunk_size: int = Field(default=5_000, ge=100)
    # Share of auto-accepted prelabels also sent to human review to measure their precision.
    prelabel_audit_share: float = Field(default=0.02, ge=0.0, le=1.0)
    # Batches: how long handed-out items stay reserved, the marked uniformly random share of
    # every batch, and how long a skipped item is kept away from the annotator who skipped it.
    lease_seconds: int = Field(default=30 * 60, ge=1)
    batch_random_share: float = Field(default=0.1, ge=0.0, le=1.0)
    skip_cooldown_seconds: int = Field(default=8 * 3600, ge=0)
    # How long a process trusts a key it authenticated (0: ask the database every request).
    # Revoking takes effect at once on the process that revoked it, within this on others.
    auth_cache_seconds: float = Field(default=5.0, ge=0.0, le=60.0)

    # The OpenAI-compatible endpoint for synthetic generation (docs/synthetic.md). Unset base
    # URL or model: POST /synthetic answers 503 llm-not-configured. The key is never echoed.
    llm_base_url: str = ""
    llm_model: str = ""
    llm_api_key: str = ""
    llm_timeout_seconds: float = Field(default=30.0, gt=0)
    llm_max_retries: int = Field(default=3, ge=0, le=10)

    # Imports (docs/imports.md): the body limit of a multipart file upload, and the named
    # databases SQL imports may read, {name: SQLAlchemy URL}. The URLs carry credentials:
    # they are never echoed in responses, job params, errors or logs (hence repr=False).
    max_import_bytes: int = Field(default=2 * 1024**3, ge=1)
    sql_sources: dict[str, str] = Field(default_factory=dict, repr=False)
    # The longest one statement of a SQL import may run on its source (PostgreSQL:
    # statement_timeout, so each fetch of a chunk of rows; SQLite: the query until its next
    # chunk of rows): past it the import job fails with /problems/sql-query-timeout.
    sql_source_timeout_seconds: float = Field(default=300.0, gt=0, le=86_400)

    # Browser front-ends on other origins (README, "Integrate"): comma-separated origins such as
    # https://label.example.com, or "*" for any origin (never with credentials). Empty: same-
    # origin only, no CORS headers at all. Credentials (cookies, TLS client certificates) are
    # never needed for the API's bearer keys; allow them only for a proxy that uses them.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    cors_allow_credentials: bool = False

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, origins: list[str]) -> list[str]:
        """Origins are compared as exact strings: refuse what no browser would send."""
        origins = [origin.lower() for origin in origins]
        if "*" in origins and len(origins) > 1:
            raise ValueError("LABELWISE_CORS_ORIGINS: '*' allows any origin; it stands alone")
        for origin in origins:
            if origin != "*" and not ORIGIN.match(origin):
                raise ValueError(
                    f"LABELWISE_CORS_ORIGINS: {origin!r} is not an origin; write "
                    "scheme://host[:port] with no path or trailing slash, "
                    "e.g. https://label.example.com"
                )
        return origins

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> Self:
        if self.cors_allow_credentials and "*" in self.cors_origins:
            raise ValueError(
                "LABELWISE_CORS_ORIGINS='*' cannot be combined with "
                "LABELWISE_CORS_ALLOW_CREDENTIALS=true: browsers refuse credentials from a "
                "wildcard origin; list the allowed origins instead"
            )
        return self

    # Signed webhooks (docs/webhooks.md). Targets on loopback, link-local or private addresses
    # are refused unless allowed (tests and single-host setups). Deliveries are retried with
    # exponential backoff (base * 2^(attempt-1), capped), up to max attempts; an endpoint that
    # has failed for disable_after_days without one success is disabled.
    webhooks_allow_private: bool = False
    webhooks_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    webhooks_retry_base_seconds: float = Field(default=10.0, gt=0)
    webhooks_retry_max_seconds: float = Field(default=6 * 3600.0, gt=0)
    webhooks_max_attempts: int = Field(default=12, ge=1, le=100)
    webhooks_disable_after_days: float = Field(default=5.0, gt=0)
    # The sender loop of every API process: how often it looks for due deliveries, and how
    # many it sends at once (each on its own thread; a slow receiver holds only its own).
    # False: this process sends nothing (another process, or a later start, does).
    webhooks_sender: bool = True
    webhooks_poll_seconds: float = Field(default=1.0, gt=0, le=60)
    webhooks_concurrency: int = Field(default=4, ge=1, le=64)
    # Events whose deliveries are all finished are deleted after this many days.
    webhooks_retention_days: float = Field(default=30.0, gt=0)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'labelwise.db').as_posix()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
