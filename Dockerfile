# Batchline's one image: workers, beat, Flower, the metrics exporter and the emulator all run
# from it with different commands (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY batchline ./batchline
COPY workers ./workers
COPY tasks ./tasks
COPY docker/entrypoint.sh /usr/local/bin/batchline-entrypoint
RUN pip install . \
 && chmod 0755 /usr/local/bin/batchline-entrypoint \
 && useradd --system --uid 10001 --user-group --home-dir /data --create-home batchline

# Beat's schedule and Flower's state live here (a volume in docker-compose.yml).
WORKDIR /data
USER batchline

ENTRYPOINT ["batchline-entrypoint"]
CMD ["celery", "-A", "workers", "worker", "-l", "INFO"]
