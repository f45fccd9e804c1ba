# The image of every application service in docker-compose.yml: web (gunicorn),
# Celery workers, beat and the migration job.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    DJANGO_SETTINGS_MODULE=recsys_platform.settings

# The CPU build of PyTorch: the default index serves a CUDA build of several gigabytes.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

WORKDIR /app

COPY requirements.txt .
# torch is installed first, at the version pinned in requirements.txt, from the CPU
# index; the second install then finds "torch==X" satisfied by "X+cpu".
RUN TORCH_VERSION="$(sed -n 's/^torch==\([0-9][0-9.]*\).*$/\1/p' requirements.txt)" \
 && test -n "$TORCH_VERSION" \
 && pip install --index-url "$TORCH_INDEX_URL" "torch==${TORCH_VERSION}" \
 && pip install -r requirements.txt \
 && python -c "import torch; assert not torch.version.cuda, torch.__version__"

RUN useradd --create-home --uid 10001 recsys
COPY --chown=recsys:recsys . .
# Mount points of the named volumes: a new volume takes this ownership.
RUN mkdir -p /app/var/media /app/var/static /var/lib/celery \
 && chown -R recsys:recsys /app/var /var/lib/celery
USER recsys

# Settings need a database URL to load; collectstatic never connects to it.
RUN DATABASE_URL=postgresql://build@localhost/build python manage.py collectstatic --noinput

EXPOSE 8000
CMD ["gunicorn", "recsys_platform.wsgi:application", "--bind=0.0.0.0:8000"]
