# dmn: the nightly consolidation daemon (and the reference agent), as a non-root container.
#
#   docker build -t dmn --build-arg TORCH_INDEX=<an index with CPU torch wheels> .
#   docker compose up -d            # the daemon, plus an example agent writing into the shared home
#
# TORCH_INDEX is optional: without it pip takes torch 2.13.0 from the default index (on Linux, the
# CUDA build: several GB). EXTRAS: the optional parts installed; Ray (the second engine, and the image of
# the Ray head and workers in docker-compose.yml) can be left out with --build-arg EXTRAS=worlds.
FROM python:3.11-slim

ARG TORCH_INDEX=""
ARG EXTRAS="worlds,ray"
RUN useradd --create-home --uid 10001 dmn
WORKDIR /opt/dmn
COPY pyproject.toml README.md ./
COPY dmn ./dmn
COPY jobs ./jobs
# The package is installed into site-packages; of the build tree only the jobs' files stay.
RUN pip install --no-cache-dir ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} torch==2.13.0 \
 && pip install --no-cache-dir ".[${EXTRAS}]" \
 && rm -rf dmn build ./*.egg-info pyproject.toml README.md

ENV DMN_HOME=/home/dmn/home
USER dmn
RUN mkdir -p "$DMN_HOME"
VOLUME ["/home/dmn/home"]
# Alive while the daemon's scheduler beats (every 5 s, through a long night too); a frozen or dead one fails.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s CMD ["dmn", "alive", "--within", "30"]
ENTRYPOINT ["dmn"]
CMD ["daemon"]
