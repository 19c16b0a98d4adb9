#!/usr/bin/env bash
# A Docker engine for the deploy tier (tests/deploy/test_stack.py), where one can run: Debian's
# docker.io and debootstrap installed if missing, dockerd started as this machine's root with
# overlay2 (vfs copies every layer in full) and no bridge network (the stack uses the host's
# network, on 127.0.0.1 only), then the stand-in base images (base-images.sh).
# Exit 0 when an engine answers; otherwise 1 and one line saying why.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
log=/var/log/stagetune-dockerd.log

answers() { docker info >/dev/null 2>&1; }
why() { echo "engine.sh: no Docker engine: $*" >&2; exit 1; }

if ! answers; then
    [ "$(id -u)" -eq 0 ] || why "starting dockerd needs root"
    if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
        command -v apt-get >/dev/null || why "dockerd is not installed and there is no apt-get"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            docker.io debootstrap; } >/dev/null 2>&1 || why "apt-get install docker.io debootstrap failed"
    fi
    dockerd --storage-driver overlay2 --bridge none --iptables=false >"$log" 2>&1 &
    for _ in $(seq 60); do answers && break; sleep 1; done
    answers || why "dockerd did not answer within 60 s (its log: $log): $(tail -n 1 "$log")"
fi
echo "engine.sh: Docker $(docker info --format '{{.ServerVersion}}') answers"
bash "$here/base-images.sh"
