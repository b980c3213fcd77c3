# The control plane and the ingest workers: CUDA torch for training, plus everything else.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
WORKDIR /src
COPY pyproject.toml README.md ./
COPY clicktune ./clicktune
COPY ingest ./ingest
COPY serving ./serving
COPY tuner ./tuner
COPY configs /etc/clicktune
# scale: Ray, for `clicktune reindex --engine ray` and the Ray nodes of compose.scale.yaml.
RUN pip install --no-cache-dir '.[tuner,gpu,scale]'
ENV CLICKTUNE_CONFIG=/etc/clicktune/default.yaml \
    CLICKTUNE_HOME=/var/lib/clicktune
CMD ["clicktune", "tuner", "run"]
