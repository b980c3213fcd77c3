# The data plane: clicktune's serving app on onnxruntime or OpenVINO + tokenizers. No torch here.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY clicktune ./clicktune
COPY ingest ./ingest
COPY serving ./serving
COPY tuner ./tuner
COPY configs ./configs
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[openvino]'

FROM python:3.11-slim
# $CLICKTUNE_HOME writable by the service user: the spool (Kafka down) and the MLflow cache.
RUN useradd --create-home --uid 10001 clicktune \
    && install -d -o clicktune -g clicktune /var/lib/clicktune
COPY --from=build /wheels /wheels
# The core dependency set and OpenVINO only: serving must never pull torch.
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && python -c "import importlib.util as u; assert u.find_spec('torch') is None"
COPY configs /etc/clicktune
ENV CLICKTUNE_CONFIG=/etc/clicktune/default.yaml \
    CLICKTUNE_HOME=/var/lib/clicktune \
    CLICKTUNE_SERVING__HOST=0.0.0.0
USER clicktune
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz')"
CMD ["clicktune", "serve"]
