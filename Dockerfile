# Image of the `migrate` and `demo` services in compose.yaml: the package and its console script.
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
