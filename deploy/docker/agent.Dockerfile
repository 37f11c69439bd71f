# The gpufabric node agent: a privileged DaemonSet on Kubernetes GPU nodes (docs/operations.md, "Images").
# Build from the repository root:  docker build -f deploy/docker/agent.Dockerfile -t gpufabric-agent .
#
# The image carries no NVIDIA driver. NVML comes from the host, as in NVIDIA's own images: the NVIDIA
# container toolkit sees NVIDIA_VISIBLE_DEVICES / NVIDIA_DRIVER_CAPABILITIES and mounts the host's
# libnvidia-ml.so and /dev/nvidia* into the container ("utility" is the capability that carries NVML).
# Only gpufabric[agent] is installed and only the agent's code is copied: no controller, no FastAPI,
# SQLAlchemy or cloud SDKs. tests/deploy/test_images.py replays the install steps and runs the entrypoint.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY drivers ./drivers
RUN python -m venv /opt/gpufabric
RUN --mount=type=cache,target=/root/.cache/pip /opt/gpufabric/bin/pip install ".[agent]"

FROM python:3.11-slim-bookworm
COPY --from=build /opt/gpufabric /opt/gpufabric
ENV PATH="/opt/gpufabric/bin:$PATH" \
    PYTHONUNBUFFERED=1 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=utility
# Runs as root: MIG changes, compute modes and GPU resets are privileged NVML calls.
ENTRYPOINT ["gpufabric-agent"]
CMD ["run"]
