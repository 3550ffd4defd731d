#!/usr/bin/env bash
# fetch.sh CACHE_DIR
#
# Downloads (without installing) what run-v2.sh needs to boot a pure cgroup v2
# Linux guest: Debian 12's cloud kernel, QEMU for x86_64, a static busybox,
# and whatever libraries QEMU needs that this machine lacks. Everything is
# unpacked with `dpkg-deb -x` into CACHE_DIR/root.
#
# Why not `apt-get install`? Installing qemu-system-x86 would pull in (and
# replace) packages the machine already has, e.g. its newer qemu-utils.
# Unpacking into a private directory touches nothing outside CACHE_DIR.
#
# Idempotent: a finished cache is marked by CACHE_DIR/.complete; a second
# run only prints the paths. Run as root (apt-get needs it on a machine
# whose package lists must first be downloaded).
set -euo pipefail

die() { echo "fetch.sh: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: fetch.sh CACHE_DIR"
mkdir -p "$1"
CACHE=$(cd "$1" && pwd)
ROOT=$CACHE/root   # the unpacked file tree
DEBS=$CACHE/debs   # the downloaded .deb files
# Debian 12 packages put libraries in both /lib and /usr/lib (a real system
# merges them with symlinks; our unpacked tree does not).
LIBPATH=$ROOT/lib/x86_64-linux-gnu:$ROOT/usr/lib/x86_64-linux-gnu
QEMU=$ROOT/usr/bin/qemu-system-x86_64

report() {
    echo "kernel: $(echo "$ROOT"/boot/vmlinuz-*)"
    echo "qemu:   $QEMU (run it with LD_LIBRARY_PATH=$LIBPATH)"
}

# Two test runs may start fetch.sh at the same time: let one do the work.
exec 9>"$CACHE/.lock"
flock 9

if [ -e "$CACHE/.complete" ]; then
    report
    exit 0
fi

# A half-done earlier run is simply started over.
rm -rf "$ROOT" "$DEBS"
mkdir -p "$ROOT" "$DEBS"

# apt-get drops to the _apt user to download, which cannot write into a
# root-owned directory; downloading as root avoids a warning per file.
# apt's progress goes to stderr: stdout is kept for the paths printed at the end.
apt_download() {   # apt_download DIR PACKAGE...
    local dir=$1; shift
    (cd "$dir" && apt-get download -q -o APT::Sandbox::User=root "$@" >&2)
}

# The metapackage linux-image-cloud-amd64 depends on the real, versioned
# kernel package (e.g. linux-image-6.1.0-56-cloud-amd64).
kernel_package() {
    apt-cache depends --important linux-image-cloud-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-.*-cloud-amd64$/ { print $2; exit }'
}

download_main() {
    local kpkg
    kpkg=$(kernel_package)
    [ -n "$kpkg" ] || return 1
    # qemu-system-data has the firmware (run-v2.sh uses its qboot.rom, so
    # SeaBIOS is not needed); busybox-static is the guest's userland, for
    # machines without /bin/busybox.
    apt_download "$DEBS" "$kpkg" qemu-system-x86 qemu-system-common qemu-system-data \
        busybox-static
}

# A fresh machine has no package lists, and old lists may name versions the
# mirror no longer has: only then is `apt-get update` needed.
if ! download_main; then
    echo "fetch.sh: download failed; running apt-get update and retrying" >&2
    apt-get update -q >&2
    rm -f "$DEBS"/*.deb
    download_main || die "cannot download the kernel and QEMU packages"
fi

for deb in "$DEBS"/*.deb; do
    dpkg-deb -x "$deb" "$ROOT"
done

# QEMU needs shared libraries; most are on any Debian machine, some are not
# (libfdt, libslirp, ...). Ask ldd which are missing, look for them among
# the library packages QEMU depends on that are not installed here, and
# unpack only the packages that really contain a missing library. Those
# libraries may need more libraries, hence the loop.
# LD_LIBRARY_PATH makes ldd (and later QEMU) see the libraries we unpacked.
missing_libs() {   # QEMU and its TCG accelerator, which Debian builds as a plugin
    { LD_LIBRARY_PATH=$LIBPATH ldd "$QEMU" "$ROOT/usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so" || true; } |
        awk '/not found/ { print $1 }' | sort -u | paste -s -d ' '
}
not_installed_lib_deps() {   # library packages the given packages depend on, absent here
    apt-cache depends --important "$@" 2>/dev/null |
        awk '$1 ~ /Depends:$/ && $2 ~ /^lib/ { sub(/:any$/, "", $2); print $2 }' | sort -u |
        while read -r pkg; do
            status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
            case $status in installed | unpacked | half-configured | triggers-*) ;; *) echo "$pkg" ;; esac
        done
}

taken=(qemu-system-x86)   # packages whose dependencies we search
while missing=$(missing_libs) && [ -n "$missing" ]; do   # e.g. "libfdt.so.1 libslirp.so.0"
    candidates=()
    for pkg in $(not_installed_lib_deps "${taken[@]}"); do
        case " ${taken[*]} " in *" $pkg "*) ;; *) candidates+=("$pkg") ;; esac
    done
    [ ${#candidates[@]} -gt 0 ] || die "no package found for: $missing"
    rm -rf "$DEBS/candidates" && mkdir "$DEBS/candidates"
    apt_download "$DEBS/candidates" "${candidates[@]}"
    took=0
    for deb in "$DEBS"/candidates/*.deb; do
        # File names in the package, compared with each missing library.
        if dpkg-deb -c "$deb" | awk -v libs=" $missing " '
                { n = split($6, p, "/"); if (p[n] != "" && index(libs, " " p[n] " ")) found = 1 }
                END { exit !found }'; then
            pkg=$(dpkg-deb -f "$deb" Package)
            echo "fetch.sh: QEMU needs $pkg, which is not installed here; unpacking it" >&2
            dpkg-deb -x "$deb" "$ROOT"
            mv "$deb" "$DEBS/"
            taken+=("$pkg")
            took=1
        fi
    done
    rm -rf "$DEBS/candidates"
    [ $took = 1 ] || die "no candidate package contains: $missing"
done

LD_LIBRARY_PATH=$LIBPATH "$QEMU" --version >&2 || die "the unpacked QEMU does not run"
touch "$CACHE/.complete"
report
