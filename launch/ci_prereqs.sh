#!/usr/bin/env bash
# System packages the test suite needs beyond Python: a real Slurm (controller, node daemon, clients) and munge,
# which tests/launch starts and stops itself to run the sbatch scripts in slurm/.
#
#   sudo bash launch/ci_prereqs.sh        (root; a fresh Debian/Ubuntu machine; .ci/run calls it first)
#
# Idempotent and quick when everything is there: apt is only touched when a binary is missing. Without root (a
# developer's workstation) it says what it would install and returns 0: the Slurm tests then skip with that reason.
set -euo pipefail

packages=(slurmctld slurmd slurm-client munge)
binaries=(slurmctld slurmd sbatch munged)

missing=()
for binary in "${binaries[@]}"; do
    if ! command -v "$binary" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$binary" ]; then
        missing+=("$binary")
    fi
done
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "launch/ci_prereqs.sh: not root, not installing ${packages[*]} (missing: ${missing[*]});" \
        "the Slurm tests will skip" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "launch/ci_prereqs.sh: no apt-get on this machine; install ${packages[*]} by hand" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: Slurm recommends a mail server and half a desktop; the daemons need none of it.
apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
