# klag-collector container image.
#
#   docker build -t klag-collector .
#   docker run --rm -p 8000:8000 -v "$PWD/config.toml:/etc/klag/config.toml:ro" klag-collector
#
# Two stages: the wheel is built in the first, so the final image holds neither the
# source tree nor the build tools.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
LABEL org.opencontainers.image.title="klag-collector" \
      org.opencontainers.image.description="Kafka consumer-group lag exporter for Prometheus" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The otel extra lets [exporter.otel] push over OTLP (the compose stack's otel profile);
# `--build-arg EXTRAS=` builds a smaller image without it.
ARG EXTRAS=otel
COPY --from=build /wheels /wheels
RUN wheel="$(ls /wheels/klag_collector-*.whl)" \
    && pip install "${wheel}${EXTRAS:+[$EXTRAS]}" \
    && rm -rf /wheels \
    # Write Twisted's plugin cache now: the non-root user cannot write site-packages,
    # and `twistd klag` would warn about it on every start.
    && python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))" \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin klag \
    && mkdir -p /etc/klag
USER 10001:10001
EXPOSE 8000
# /health answers while the reactor runs, whatever Kafka does (see /ready for Kafka).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["klag-collector"]
CMD ["-c", "/etc/klag/config.toml"]
