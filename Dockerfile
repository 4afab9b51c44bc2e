# Labelwise: migrate, then serve. SQLite in the /data volume by default;
# set LABELWISE_DATABASE_URL=postgresql+psycopg://... to use PostgreSQL instead.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LABELWISE_DATA_DIR=/data

WORKDIR /srv/labelwise
COPY pyproject.toml constraints.txt README.md alembic.ini ./
COPY alembic ./alembic
COPY app ./app
# Editable install keeps alembic/ beside app/, where the migrate command finds it.
RUN pip install -c constraints.txt -e . \
    && useradd --create-home --uid 10001 labelwise \
    && mkdir -p /data && chown labelwise:labelwise /data

USER labelwise
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2)"
ENTRYPOINT ["sh", "-c", "labelwise migrate && exec labelwise serve --host 0.0.0.0 --port 8000"]
