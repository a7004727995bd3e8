# syntax=docker/dockerfile:1
# probono-bot in a container: the wheel built from this checkout, installed with the locked
# dependencies (requirements/lock.txt), run by a user without privileges.
#
# No container engine runs on the machines this project is built and tested on, so CI does
# not build this file. tests/test_wheel.py runs its steps instead (a new virtual environment,
# the locked dependencies, the wheel, `probono db upgrade`, a Spanish client's first turn, and
# this HEALTHCHECK against `probono serve`), and fails if this file stops running exactly
# those commands.
#
#   docker build -t probono-bot .
#   docker run --env-file .env -p 127.0.0.1:8080:8080 -v probono-data:/var/lib/probono probono-bot
#
# compose.yaml runs it with PostgreSQL; deploy/README.md walks through a first deployment.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/probono
# The dependencies before the code, so that a change to the code alone reuses this layer.
COPY requirements/lock.txt requirements/lock.txt
RUN /opt/probono/bin/pip install --require-hashes -r requirements/lock.txt
COPY . .
RUN /opt/probono/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist .
RUN /opt/probono/bin/pip install --no-deps /dist/probono_bot-*.whl

FROM ${PYTHON_IMAGE}
# Production refuses to start without PROBONO_ENCRYPTION_KEYS and the channels' secrets.
# The SQLite default keeps a lone `docker run` in the volume; compose.yaml sets PostgreSQL.
ENV PATH=/opt/probono/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PROBONO_ENV=production \
    PROBONO_DATA_DIR=/var/lib/probono \
    DATABASE_URL=sqlite:////var/lib/probono/probono.db
RUN groupadd --system --gid 10001 probono \
    && useradd --system --uid 10001 --gid probono --home-dir /var/lib/probono --create-home \
        --shell /usr/sbin/nologin probono \
    && chmod 0700 /var/lib/probono
COPY --from=build /opt/probono /opt/probono
USER probono
WORKDIR /var/lib/probono
VOLUME ["/var/lib/probono"]
EXPOSE 8080
# The image has no curl; Python's standard library asks /healthz (503 when the database is down).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["probono"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
