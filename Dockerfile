# resnet-service: the API and the GPU workers share this image (docker-compose.yml picks the command).
FROM tensorflow/tensorflow:2.21.0-gpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    RESNET_STATE_DIR=/srv/resnet

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY core ./core
COPY jobs ./jobs
COPY service ./service
COPY worker ./worker
COPY migrations ./migrations
RUN pip install --no-cache-dir ".[deploy,export]" \
    && useradd --create-home --uid 10001 resnet \
    && mkdir -p /srv/resnet \
    && chown -R resnet:resnet /srv/resnet

USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["uvicorn", "service.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000"]
