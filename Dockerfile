# Batchline's one image: workers, beat, Flower, the metrics exporter and the emulator all run
# from it with different commands (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Dependencies first, from pyproject.toml alone: a code change does not reinstall them.
COPY pyproject.toml README.md ./
# The workers also read Parquet and zstd inputs: those optional extras are installed too.
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['parquet'] + p['optional-dependencies']['zstd']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY batchline ./batchline
COPY workers ./workers
COPY tasks ./tasks
COPY docker/entrypoint.sh /usr/local/bin/batchline-entrypoint
RUN pip install --no-deps . \
 && chmod 0755 /usr/local/bin/batchline-entrypoint \
 && useradd --system --uid 10001 --user-group --home-dir /data --create-home batchline

# Beat's schedule and Flower's state live here (volumes in docker-compose.yml).
WORKDIR /data
USER batchline

ENTRYPOINT ["batchline-entrypoint"]
CMD ["celery", "-A", "workers", "worker", "-l", "INFO"]
