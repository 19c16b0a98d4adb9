# One image for the whole system: the API (which is also the Ray head) and the GPU workers
# run it with different commands; see docker-compose.yml. It installs the versions the test
# suite ran on (constraints.txt, the lock file scripts/install.sh uses too).

# Stage 1: the dependencies in a virtual environment, and the project as a wheel. The
# runtime image below copies both, so pip's build files and the sources stay behind.
# The image serves and runs trials: the core dependencies and those of the extras `server`
# and `worker` (pyproject.toml says who needs which), read from pyproject.toml here.
FROM python:3.11-slim-bookworm AS requirements
COPY pyproject.toml /
RUN python -c "import tomllib; p = tomllib.load(open('/pyproject.toml', 'rb'))['project']; \
print(*p['dependencies'], *p['optional-dependencies']['server'], \
*p['optional-dependencies']['worker'], sep='\n')" > /requirements.txt

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/stagetune
WORKDIR /src
# The dependencies in a layer keyed on their list and the lock alone: a change to the code
# or to pyproject.toml's other tables reuses it instead of fetching torch's CUDA wheels
# (several GB) again.
COPY --from=requirements /requirements.txt ./
COPY constraints.txt ./
RUN /opt/stagetune/bin/pip install -c constraints.txt -r requirements.txt
COPY pyproject.toml README.md ./
COPY workers ./workers
COPY studies ./studies
COPY service ./service
COPY examples ./examples
COPY stagetune ./stagetune
RUN /opt/stagetune/bin/pip wheel --no-deps -c constraints.txt -w /wheels .

# Stage 2: what runs
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/stagetune/bin:$PATH

# Fashion-MNIST's raw files, as on the development machines
RUN apt-get update \
    && apt-get install -y --no-install-recommends dataset-fashion-mnist \
    && rm -rf /var/lib/apt/lists/*

# the dependencies (unchanged by a change to the code, so this layer is reused), then the
# project's wheel on top
COPY --from=build /opt/stagetune /opt/stagetune
COPY --from=build /wheels /wheels
RUN pip install --no-deps /wheels/*.whl && rm -r /wheels && pip check

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
