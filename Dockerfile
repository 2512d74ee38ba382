# The one image every Cronbeat service in docker-compose.yml runs; each service's command
# picks the process (its Procfile line).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# .dockerignore keeps .venv, .cronbeat and .git out of the context.
COPY . .
# constraints.txt pins every version CI tested; the image gets exactly those.
RUN pip install -c constraints.txt .

# Beat keeps its schedule in /data (a volume); the processes need no root.
RUN useradd --system --create-home cronbeat \
    && mkdir /data \
    && chown cronbeat /data
USER cronbeat

EXPOSE 8000 5555
