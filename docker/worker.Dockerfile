# The worker image the Helm chart runs (`enrich worker`, `enrich topics create`).
# Build from the repository root:  docker build -f docker/worker.Dockerfile -t REGISTRY/mm-enrich:0.1.0 .
# Only the `serve` extra: no torch, no bundled Triton or broker; `ops` for the `enrich` command, no
# training/ or corpora/ (offline).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY enrich enrich
COPY streams streams
COPY ops ops
COPY triton_models triton_models
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[serve]"

FROM python:3.11-slim
RUN useradd --uid 10001 --user-group --no-create-home enrich
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
USER 10001:10001
WORKDIR /var/lib/enrich
CMD ["enrich", "worker"]
