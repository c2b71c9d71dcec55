# syntax=docker/dockerfile:1.7
# Triton Inference Server with what the Python-backend models import (this project and its dependencies). The
# model repository itself is a volume filled by the model build. Build from the repository root:
#   docker build -f docker/triton.Dockerfile -t dlstream-triton:0.1.0 .
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:25.01-py3

FROM ${TRITON_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
COPY pyproject.toml setup.py README.md /opt/dlstream/
COPY services /opt/dlstream/services
COPY pipelines /opt/dlstream/pipelines
# The image's Python (3.12) is the one the backend stub embeds, so the packages go into its site-packages.
RUN pip install --no-compile --break-system-packages "/opt/dlstream[models]"
# triton-server (uid 1000) is the unprivileged user the NVIDIA image ships.
USER 1000:1000
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver"]
CMD ["--model-repository=/models", "--model-control-mode=explicit", "--load-model=*", "--strict-readiness=true"]
