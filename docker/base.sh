#!/usr/bin/env bash
# Make a Debian bookworm base image with Python 3.11 from Debian's archive, for machines that
# reach no container registry (python:3.11-slim cannot be pulled there):
#
#   sudo docker/base.sh [IMAGE]        # default IMAGE: prunepilot-base:bookworm
#
# Then build with `--build-arg BASE_IMAGE=prunepilot-base:bookworm`. Needs root, debootstrap
# and a Docker daemon. Does nothing when the image exists.
set -euo pipefail

IMAGE="${1:-prunepilot-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base: $IMAGE exists"
    exit 0
fi
command -v debootstrap >/dev/null || { echo "base: debootstrap is not installed" >&2; exit 1; }
ROOTFS="$(mktemp -d /tmp/prunepilot-base.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT
echo "base: debootstrap bookworm into $ROOTFS"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$ROOTFS" "$MIRROR" >/dev/null
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' - "$IMAGE" >/dev/null
echo "base: $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | numfmt --to=iec))"
