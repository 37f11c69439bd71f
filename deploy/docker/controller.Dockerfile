# The gpufabric controller: REST API, placement, background jobs (docs/operations.md, "Images").
# Build from the repository root:  docker build -f deploy/docker/controller.Dockerfile -t gpufabric-controller .
#
# gpufabric[controller,postgres]: the web, database and cloud stack plus the PostgreSQL driver that several
# replicas need. Runs as uid/gid 10001 (the Helm chart and deploy/kubernetes set the same ids).
# tests/deploy/test_images.py replays the install steps and runs the entrypoint.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY controller ./controller
COPY drivers ./drivers
RUN python -m venv /opt/gpufabric
RUN --mount=type=cache,target=/root/.cache/pip /opt/gpufabric/bin/pip install ".[controller,postgres]"

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 gpufabric \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/gpufabric --no-create-home gpufabric \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/gpufabric
COPY --from=build /opt/gpufabric /opt/gpufabric
ENV PATH="/opt/gpufabric/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/gpufabric \
    GPUFABRIC_DATA_DIR=/var/lib/gpufabric
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["gpufabric"]
CMD ["controller", "serve", "--host", "0.0.0.0", "--port", "8080"]
