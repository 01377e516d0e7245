# One image for the API and the workers (docker-compose.yml picks the command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
# Metadata first so the dependency layer is reused when only code changes.
COPY pyproject.toml README.md ./
# robaudit/ holds the science and relative symlinks to the service folders, installed as robaudit.*.
COPY robaudit ./robaudit
COPY models ./models
COPY backend ./backend
COPY worker ./worker
COPY frontend ./frontend
COPY launch ./launch
RUN pip install '.[service]' \
 && useradd --create-home --uid 10001 --shell /usr/sbin/nologin robaudit \
 && mkdir -p /data /datasets \
 && chown robaudit:robaudit /data

USER robaudit
WORKDIR /home/robaudit
# Database (unless DATABASE_URL), checkpoints, job state and the generated token live here.
ENV ROBAUDIT_DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8000

# API; the worker services override this with `robaudit worker ...`.
CMD ["uvicorn", "--factory", "robaudit.backend.app.main:app_from_env", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
