#!/usr/bin/env bash
# The base image tests/docker/test_image.py builds docker/Dockerfile on, made once per
# machine and kept in podman's storage: a minimal Debian with python3 and venv, made
# with debootstrap from the Debian mirror apt already uses (no container registry is
# needed). Prints the image name. A second run finds the image and does nothing.
#
#   bash tests/docker/base_image.sh            # prepare if missing
#   MAILCOACH_BASE_IMAGE=name  ...             # another name (default below)
#   MAILCOACH_DEBIAN_MIRROR=URL ...            # another mirror (default: apt's)
#   MAILCOACH_DEBIAN_SUITE=bookworm ...        # another release (default: bookworm)
#
# Needs root (debootstrap), podman and debootstrap (tests/run.sh installs them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
image="${MAILCOACH_BASE_IMAGE:-localhost/debian-python:12}"
suite="${MAILCOACH_DEBIAN_SUITE:-bookworm}"

if podman image exists "$image"; then
    echo "$image"
    exit 0
fi

mirror="${MAILCOACH_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    # The mirror apt is configured with for this suite: whatever this machine can reach.
    mirror="$(apt-get indextargets --format '$(RELEASE) $(REPO_URI)' 'Identifier: Packages' \
        2>/dev/null | awk -v suite="$suite" '$1 == suite { print $2; exit }')"
fi
if [ -z "$mirror" ]; then
    echo "base_image.sh: no Debian mirror for $suite in apt's sources;" \
         "set MAILCOACH_DEBIAN_MIRROR" >&2
    exit 1
fi

rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
echo "base_image.sh: debootstrap $suite from $mirror (a few minutes, once)" >&2
# python-is-python3: the Dockerfile runs "python", as in the python:*-slim images.
debootstrap --variant=minbase \
    --include=python3,python3-venv,python-is-python3,ca-certificates \
    "$suite" "$rootfs" "$mirror" >&2
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | podman import --quiet - "$image" >&2
echo "$image"
