# recency-audit service image. CPU by default:
#   docker build -t recency-audit .
# CUDA (bf16 on the GPU): a CUDA base with Python 3.11 and the CUDA wheel of torch, e.g.
#   docker build -t recency-audit:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 .
# Run with the bank and its model on a volume (the bank's manifest names the model path; mount
# it at the same path, or set RECENCY_AUDIT_MODEL_DIR):
#   docker run -p 8000:8000 -v "$PWD/artifacts:/data" \
#     -e RECENCY_AUDIT_BANK_DIR=/data/banks/default -e RECENCY_AUDIT_API_KEYS=... recency-audit
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    RECENCY_AUDIT_HOST=0.0.0.0 \
    RECENCY_AUDIT_PORT=8000 \
    RECENCY_AUDIT_HOME=/data

# CUDA bases ship no python3.11 by default; slim Python bases already have it.
RUN if ! command -v python3.11 >/dev/null; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3.11 python3.11-venv && rm -rf /var/lib/apt/lists/*; \
    fi \
 && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app
RUN pip install --index-url "${TORCH_INDEX}" "torch==2.13.0"
COPY pyproject.toml README.md recency_audit.py constraints.txt ./
COPY probe_bank ./probe_bank
COPY trainer ./trainer
COPY audit_service ./audit_service
RUN pip install -c constraints.txt .

RUN useradd --system --uid 10001 --home-dir /data --no-create-home audit \
 && mkdir -p /data && chown audit /data
USER audit
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"RECENCY_AUDIT_PORT\", \"8000\")}/readyz', timeout=2)" || exit 1

ENTRYPOINT ["recency-audit"]
CMD ["serve"]
