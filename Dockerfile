# One image for the whole system: the API (which is also the Ray head) and the GPU workers
# run it with different commands; see docker-compose.yml. The install steps are the ones
# scripts/install.sh runs in CI (the Debian packages it lists, then pip on the project).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Fashion-MNIST's raw files, as on the development machines
RUN apt-get update \
    && apt-get install -y --no-install-recommends dataset-fashion-mnist \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/stagetune
COPY pyproject.toml README.md ./
COPY workers ./workers
COPY studies ./studies
COPY service ./service
COPY examples ./examples
# torch from PyPI: its Linux x86_64 wheel is the CUDA build (the driver comes from the host
# through the NVIDIA container toolkit)
RUN pip install .

# Not root: the data folder belongs to the user the services run as; plugins are mounted
# read-only
RUN useradd --create-home --uid 1000 stagetune \
    && mkdir -p /data /plugins \
    && chown stagetune:stagetune /data
USER stagetune
WORKDIR /home/stagetune
ENV STAGETUNE_DATA_DIR=/data \
    STAGETUNE_PLUGINS_DIR=/plugins

# the API; the Ray head's port, which workers join
EXPOSE 8000 6379
CMD ["stagetune", "head", "--host", "0.0.0.0"]
