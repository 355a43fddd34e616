# The GPU worker image: CUDA runtime, the project with its gpu and s3 extras, a Prefect worker for
# the GPU pool. Build and run (the host needs the NVIDIA Container Toolkit):
#   docker build -t linklm-gpu-worker .
#   docker run --gpus all -e PREFECT_API_URL=http://prefect.example:4200/api \
#       -e HF_TOKEN -v linklm-runs:/opt/linklm/runs linklm-gpu-worker
# The same image serves predictions (docs/serve.md): the service instead of the worker,
#   docker run -d --gpus all -p 8000:8000 -e LINKLM_ARTIFACTS_URL=s3://bucket/linklm \
#       -e LINKLM_HEALTH_URL=http://127.0.0.1:8000/health --entrypoint python \
#       linklm-gpu-worker -m flows.serve --model champion --host 0.0.0.0 --port 8000
# torch==2.13.0 from PyPI is a CUDA 13.0 build on Linux x86_64 and brings its own CUDA
# libraries (the nvidia-* wheels), so the image needs no CUDA runtime of its own: a plain
# Ubuntu, whose GPU access the NVIDIA Container Toolkit provides. The host needs an NVIDIA
# driver >= 580 (CUDA 13.0); NVIDIA_REQUIRE_CUDA makes the toolkit refuse to start the
# container on an older one, with that reason, instead of torch finding no GPU.
FROM ubuntu:24.04

LABEL org.opencontainers.image.description="linklm GPU worker: torch 2.13.0 (CUDA 13.0), needs an NVIDIA driver >= 580"

ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NVIDIA_REQUIRE_CUDA=cuda>=13.0 \
    DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    LINKLM_PROJECT_DIR=/opt/linklm \
    LINKLM_HOME=/opt/linklm/runs/.linklm-home \
    HF_HOME=/opt/linklm/runs/.hf \
    PREFECT_HOME=/opt/linklm/runs/.prefect \
    PREFECT_WORKER_WEBSERVER_HOST=0.0.0.0 \
    PREFECT_WORKER_WEBSERVER_PORT=8080 \
    HF_HUB_OFFLINE=0 \
    TRANSFORMERS_OFFLINE=0 \
    HF_DATASETS_OFFLINE=0
# (the project keeps Hugging Face offline unless told otherwise; a GPU worker may load hub
# models such as google/gemma-3-270m-it with HF_TOKEN)

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && useradd --create-home --uid 10001 --shell /bin/bash linklm

WORKDIR /opt/linklm

# Dependencies first (cached while only the code changes): the pinned torch, then the rest.
COPY pyproject.toml README.md ./
RUN pip install "torch==2.13.0" \
    && mkdir -p linklm flows tasks deployments \
    && touch linklm/__init__.py flows/__init__.py tasks/__init__.py deployments/__init__.py \
    && pip install ".[gpu,s3]" \
    && pip uninstall -y linklm

COPY --chown=linklm:linklm . .
RUN pip install --no-deps -e ".[gpu,s3]" \
    && mkdir -p runs && chown -R linklm:linklm /opt/linklm

USER linklm
VOLUME ["/opt/linklm/runs"]
EXPOSE 8080 8000

# The worker's own health server (prefect worker start --with-healthcheck) answers /health;
# the prediction service answers its own (LINKLM_HEALTH_URL=http://127.0.0.1:8000/health).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(os.environ.get('LINKLM_HEALTH_URL', 'http://127.0.0.1:8080/health'), timeout=4)"

ENTRYPOINT ["python", "-m", "deployments", "worker"]
CMD ["--pool", "linklm-gpu", "--limit", "1", "--healthcheck"]
