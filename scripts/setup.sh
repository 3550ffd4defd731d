#!/usr/bin/env bash
# Set up a Debian or Ubuntu machine for mydocker, then run a first container.
#
#   scripts/setup.sh            as root, or as a user who may use sudo
#
# One script for everyone: the README's quick start, the Vagrant VM's
# provisioning and CI (.ci/run) all call it, so CI proves the classroom set-up.
# It is safe to run again: every step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

MDBOOK_VERSION=0.5.4
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

step() { printf '\n== %s\n' "$*"; }

step "Debian packages"
# busybox-static: a statically linked busybox, the source of the busybox image
# iptables, iproute2: container networking (and a look at it from the host)
# tmux: the tests drive interactive `run -ti` sessions through it
# build-essential: the C linker that rustc needs; curl: to fetch rustup
# crun, runc, hyperfine, jq: bench/run times mydocker against crun and runc
#   with hyperfine (jq edits their OCI spec); it installs nothing itself
# python3: the stage 6 tests import a tarball made by Python's tarfile
packages="busybox-static iptables iproute2 tmux build-essential curl ca-certificates crun runc hyperfine jq python3"
missing=""
for p in $packages; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    # A freshly booted VM (the classroom's) often runs its automatic apt
    # update just then: wait for apt's locks instead of failing.
    for try in $(seq 30); do
        if out=$($SUDO apt-get update -qq 2>&1); then
            [ -z "$out" ] || printf '%s\n' "$out"
            break
        fi
        if [ "$try" -eq 30 ] || ! grep -q "Could not get lock" <<<"$out"; then
            printf '%s\n' "$out" >&2
            exit 1
        fi
        echo "apt is busy (automatic updates?): waiting for it"
        sleep 10
    done
    $SUDO env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq -o DPkg::Lock::Timeout=600 $missing
fi

step "Rust toolchain"
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
if ! command -v cargo >/dev/null; then
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --profile minimal --component clippy,rustfmt
    . "$HOME/.cargo/env"
fi
cargo --version

step "mdBook $MDBOOK_VERSION (to read and check the book)"
if [ "$(mdbook --version 2>/dev/null)" != "mdbook v$MDBOOK_VERSION" ]; then
    cargo install mdbook --locked --version "$MDBOOK_VERSION"
fi

step "Build and install mydocker"
cargo build --release --package mydocker
$SUDO install -m 0755 target/release/mydocker /usr/local/bin/mydocker

step "Stage tags (git diff stage-01-namespace stage-02-cgroups)"
# One tag per stage, each a commit whose tree is that chapter's crate.
if git rev-parse --verify --quiet HEAD >/dev/null 2>&1; then
    cargo xtask tags
else
    echo "not a git clone: no stage tags"
fi

step "A first container"
# --net none: a container without a network, as with docker; without it,
# run would plug the container into the default bridge network.
$SUDO /usr/local/bin/mydocker run --rm --net none busybox sh -c 'echo "Hello from $(hostname), PID $$ in a container"'
