# Image of the `migrate`, `worker-*` and `demo` services in compose.yaml: the package, its
# console script and pynenc's (`pynenc --app ... runner start`).
FROM python:3.12-slim
WORKDIR /src
COPY pyproject.toml README.md alembic.ini ./
COPY alembic ./alembic
COPY src ./src
# psycopg's precompiled build: the slim image has no libpq of its own.
RUN pip install --no-cache-dir .[binary] && rm -rf /src
WORKDIR /home/pynenc
USER nobody
CMD ["pynenc-postgres", "demo", "--workdir", "/tmp/pynenc-postgres"]
