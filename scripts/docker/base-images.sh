#!/usr/bin/env bash
# Stand-ins for the two images the project's Dockerfile and docker-compose.yml name
# (python:3.11-slim-bookworm, postgres:16), for a Docker engine that reaches no image
# registry: a Debian bookworm root made with debootstrap, imported, and the two images built
# on it from Debian's packages only. The files a user runs stay exactly as they are; only the
# images behind their names differ (Debian's Python 3.11 and PostgreSQL 15).
#
#   scripts/docker/base-images.sh          # builds what is missing
#   scripts/docker/base-images.sh --force  # rebuilds all three
#
# Builds reach the Debian and PyPI mirrors on the host's network; the base trusts the host's
# CA certificates and pip settings, so it works behind the same TLS-inspecting proxy.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
force=false; [ "${1:-}" = "--force" ] && force=true

have() { ! $force && docker image inspect "$1" >/dev/null 2>&1; }
say() { echo "base-images: $*"; }

if ! have debian:bookworm-slim; then
    root="$(mktemp -d /var/tmp/stagetune-rootfs.XXXXXX)"
    trap 'rm -rf "$root"' EXIT
    start=$SECONDS
    debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$mirror" >/dev/null
    # the host's CA certificates (a TLS-inspecting proxy's among them) and pip's settings
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
        chroot "$root" update-ca-certificates >/dev/null
    fi
    [ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
    # as Docker's debian images: no apt caches, no docs
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* \
        "$root"/usr/share/man/*
    tar -C "$root" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' - debian:bookworm-slim >/dev/null
    rm -rf "$root"; trap - EXIT
    say "debian:bookworm-slim imported from debootstrap in $((SECONDS - start)) s"
fi

for image in python:3.11-slim-bookworm postgres:16; do
    have "$image" && { say "$image: present"; continue; }
    start=$SECONDS
    docker build --network host -q -t "$image" "$here/${image%%:*}" >/dev/null
    say "$image built from Debian packages in $((SECONDS - start)) s"
done
