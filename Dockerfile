# Paywatch: one image, two roles (docs/deploy.md).
#   docker run IMAGE dashboard    the Streamlit dashboard on 8501 (health: /_stcore/health)
#   docker run IMAGE worker       the alert worker; health and metrics on 9464 (/healthz, /readyz, /metrics)
# Secrets (MONGODB_URI, STRIPE_API_KEY, SLACK_BOT_TOKEN) come from the environment at run time, never from a layer.
# BASE may be any Debian-like image with Python 3.11 and venv (make image-test makes one locally).
ARG BASE=python:3.11-slim

# -- 1: the wheelhouse -------------------------------------------------------------------
FROM ${BASE} AS wheels
WORKDIR /src
# A wheelhouse downloaded on the host (make image-test) lets this stage run with no network;
# otherwise the folder holds only its README and pip asks the package index.
COPY wheelhouse/ /wheelhouse/
ARG PIP_NO_INDEX=0
COPY pyproject.toml requirements.txt README.md ./
COPY paywatch/ paywatch/
COPY metrics/ metrics/
COPY alerts/ alerts/
COPY notify/ notify/
COPY reports/ reports/
COPY dashboard/ dashboard/
COPY demo/ demo/
# requirements.txt is the lock: the package's dependencies at exactly its versions.
RUN python3 -m venv /opt/build \
    && PIP_NO_INDEX="${PIP_NO_INDEX}" /opt/build/bin/pip wheel --no-cache-dir --disable-pip-version-check \
         --find-links /wheelhouse --constraint requirements.txt --wheel-dir /wheels .

# -- 2: the runtime ----------------------------------------------------------------------
FROM ${BASE}
ARG PAYWATCH_UID=10001
RUN useradd --system --uid "${PAYWATCH_UID}" --gid 0 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin paywatch
# The wheelhouse is mounted for this step only, so no layer keeps a copy of it.
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    python3 -m venv /opt/paywatch \
    && /opt/paywatch/bin/pip install --no-cache-dir --disable-pip-version-check --no-index \
         --find-links /wheels paywatch==0.1.0
WORKDIR /app
# Streamlit reads .streamlit/config.toml from the working directory.
COPY .streamlit/config.toml .streamlit/config.toml
# Everything the processes write goes under /tmp, so the root filesystem can be read-only.
# The dashboard listens on PAYWATCH_PORT, else PORT (set by Railway and other hosts), else 8501.
ENV PATH=/opt/paywatch/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    PAYWATCH_HOME=/tmp/paywatch \
    PAYWATCH_ADDRESS=0.0.0.0 \
    PAYWATCH_WORKER_PORT=9464 \
    PAYWATCH_WORKER_ADDRESS=0.0.0.0
USER ${PAYWATCH_UID}
EXPOSE 8501 9464
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 CMD ["paywatch", "healthcheck"]
ENTRYPOINT ["paywatch"]
CMD ["dashboard"]
