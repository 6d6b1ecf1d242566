# openrouter-proxy: one uvicorn worker serving on 0.0.0.0:8080, data in /data.
# Checked without a Docker engine by tests/test_docker.py (hadolint, and a replay of the
# install steps below in a fresh virtualenv that then serves and answers the HEALTHCHECK).
FROM python:3.11.15-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# A system user with no login and no home; /data belongs to it so that a named volume
# mounted there starts out writable (Docker copies the ownership on first use).
RUN groupadd --system --gid 10001 proxy \
 && useradd --system --uid 10001 --gid proxy --no-log-init --no-create-home \
        --shell /usr/sbin/nologin proxy \
 && mkdir /data \
 && chown proxy:proxy /data

WORKDIR /app

# Dependencies get their own layer, rebuilt only when pyproject.toml changes: the list is
# read from [project].dependencies with tomllib, so the app code is not needed yet.
# The cache mount keeps pip's downloads out of the image and speeds up rebuilds.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && pip install -r requirements.txt

# The app itself; its dependencies are already installed. README.md is named by
# pyproject.toml's `readme`, so the build needs it.
COPY README.md ./
COPY app/ app/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps . \
 && rm -rf build ./*.egg-info

# PROXY_ALLOW_OPEN is deliberately not set: `docker run -p …` without client keys must stop
# with the usual one-line message rather than serve an open proxy (DESIGN.md §10).
ENV PROXY_HOST=0.0.0.0 \
    PROXY_DB_PATH=/data/openrouter-proxy.db
VOLUME /data
EXPOSE 8080
# The proxy user created above, by number so that runtimes can verify it is not root.
USER 10001:10001

# No curl in slim images; urlopen raises (exit 1) on a refused connection or a non-2xx status.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

# Exec form: the console script is PID 1 and gets SIGTERM itself; uvicorn shuts down
# gracefully on it (in-flight requests finish) and exits 0.
STOPSIGNAL SIGTERM
CMD ["openrouter-proxy", "serve", "--host", "0.0.0.0", "--port", "8080"]
