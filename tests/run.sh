#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh machine:
#   - the Debian programs the tests drive (swaks, msmtp, mbsync, neomutt, bwrap, tmux,
#     claws-mail, Thunderbird, Xvfb, xdotool, ImageMagick; podman, buildah, runc and
#     debootstrap build and run the Docker image without a Docker engine:
#     tests/docker/test_image.py makes its Debian base image once per machine with
#     tests/docker/base_image.sh, and podman keeps it),
#   - a virtualenv (.venv, or $MAILCOACH_VENV) with mailcoach and its test extras: on CI
#     (CI=true) a NON-editable install, as users get it, and the suite imports that install
#     (MAILCOACH_TEST_INSTALLED=1, see tests/conftest.py), so a file missing from the wheel
#     fails; on a developer's machine an editable one,
#   - pytest (arguments are passed on). Exit code 5 (no tests collected) counts as success.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in swaks:swaks msmtp:msmtp mbsync:isync neomutt:neomutt bwrap:bubblewrap tmux:tmux \
            claws-mail:claws-mail thunderbird:thunderbird Xvfb:xvfb xdotool:xdotool \
            import:imagemagick podman:podman buildah:buildah runc:runc debootstrap:debootstrap \
            dovecot:dovecot-imapd /usr/lib/dovecot/lmtp:dovecot-lmtpd postfix:postfix openssl:openssl; do
    # sbin too: runc and debootstrap live there, outside a normal user's PATH
    PATH="$PATH:/usr/sbin:/sbin" command -v "${tool%%:*}" >/dev/null 2>&1 \
        || need+=("${tool##*:}")
done
python=${PYTHON:-python3}
# Debian's python3 needs python3-venv for "python3 -m venv" (ensurepip)
"$python" -c "import ensurepip, venv" >/dev/null 2>&1 || need+=(python3-venv)
if ((${#need[@]})); then
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    echo "installing Debian packages: ${need[*]}"
    $sudo apt-get update -qq
    if [[ " ${need[*]} " == *" postfix "* ]]; then
        # no system Postfix: its install would otherwise configure and start one (the
        # tests run private instances of their own, tests/mailservers.py)
        echo "postfix postfix/main_mailer_type select No configuration" \
            | $sudo debconf-set-selections
    fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

venv=${MAILCOACH_VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
if [ "${CI:-}" = true ]; then
    # What users install: a wheel built from this tree, replacing any earlier install.
    "$venv/bin/python" -m pip install -q '.[test]'
    "$venv/bin/python" -m pip install -q --no-deps --force-reinstall .
    export MAILCOACH_TEST_INSTALLED=1
else
    "$venv/bin/python" -m pip install -q -e '.[test]'
fi

# The real model of tests/realmodel and bench/agent_tasks.py (llama.cpp + Gemma 3 270M),
# in a per-machine cache: built once (about half an hour on 2 cores), then reused. Built in
# the background while the other tests run; tests/realmodel wait for it (by its PID) and
# fail with CI=true, skip elsewhere, if it could not be installed (its log: build/).
mkdir -p build
bash tests/realmodel/setup.sh > build/realmodel-setup.log 2>&1 &
export MAILCOACH_REALMODEL_SETUP_PID=$!
# A run of a few tests must not leave a build behind it (the next run starts it again).
trap 'kill "$MAILCOACH_REALMODEL_SETUP_PID" 2>/dev/null || true' EXIT

status=0
"$venv/bin/python" -m pytest "$@" || status=$?
if [ "$status" = 5 ]; then
    echo "pytest collected no tests"
    status=0
fi
exit "$status"
