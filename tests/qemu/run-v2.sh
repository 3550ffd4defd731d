#!/usr/bin/env bash
# run-v2.sh --cache CACHE_DIR [--bin PATH]... [--env K=V]... [--module NAME]...
#           [--timeout SECS] [--mem MB] -- COMMAND [ARGS...]
#
# Runs COMMAND as root inside a throw-away Linux guest that has *only*
# cgroup v2 (the host has a v1/v2 hybrid), and exits with COMMAND's status.
# The guest is Debian's cloud kernel under QEMU (see fetch.sh, which must
# have filled CACHE_DIR first) with a busybox initramfs built on the fly:
#
#   --bin PATH     copy a host program to /opt/bin/<basename> in the guest,
#                  with the shared libraries ldd says it needs (repeatable)
#   --env K=V      export K=V to COMMAND (repeatable)
#   --module NAME  load one more kernel module (and what it depends on);
#                  overlay, veth and bridge are always loaded
#   --timeout SECS kill the guest after SECS seconds (default 600)
#   --mem MB       guest memory (default 1024)
#
# The guest console (boot messages, COMMAND's stdout and stderr) is streamed
# to stdout. COMMAND's stdin is /dev/null. Exit status: COMMAND's own; 124 if
# the timeout hit; 125 if the harness or the guest boot failed. Only numbers
# 124 and 125 are therefore ambiguous.
set -Eeuo pipefail

die() { echo "run-v2.sh: $*" >&2; exit 125; }
# Any unexpected failure is a harness failure too: never let it look like
# COMMAND's exit status 1.
trap 'die "unexpected error at line $LINENO"' ERR

CACHE='' TIMEOUT=600 MEM=1024
BINS=() ENVS=() MODULES=(overlay veth bridge)
while [ $# -gt 0 ]; do
    case $1 in
        --cache) CACHE=${2:?--cache needs a directory}; shift 2 ;;
        --bin) BINS+=("${2:?--bin needs a path}"); shift 2 ;;
        --env) ENVS+=("${2:?--env needs K=V}"); shift 2 ;;
        --module) MODULES+=("${2:?--module needs a name}"); shift 2 ;;
        --timeout) TIMEOUT=${2:?--timeout needs seconds}; shift 2 ;;
        --mem) MEM=${2:?--mem needs megabytes}; shift 2 ;;
        --) shift; break ;;
        *) die "unknown option '$1' (usage: run-v2.sh --cache DIR [options] -- COMMAND [ARGS...])" ;;
    esac
done
[ $# -gt 0 ] || die "no COMMAND given after --"
[ -n "$CACHE" ] || die "--cache DIR is required"
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout must be a positive number of seconds"
[[ $MEM =~ ^[1-9][0-9]*$ ]] || die "--mem must be a number of megabytes"

# --- What fetch.sh unpacked -------------------------------------------------
ROOT=$CACHE/root
[ -e "$CACHE/.complete" ] || die "$CACHE is not ready: run tests/qemu/fetch.sh $CACHE first"
KERNELS=("$ROOT"/boot/vmlinuz-*)
[ ${#KERNELS[@]} = 1 ] && [ -f "${KERNELS[0]}" ] || die "expected one kernel in $ROOT/boot"
KERNEL=${KERNELS[0]}
MODDIR=$ROOT/lib/modules/${KERNEL##*/vmlinuz-}
QEMU=$ROOT/usr/bin/qemu-system-x86_64
# The libraries fetch.sh had to add because this machine lacks them.
export LD_LIBRARY_PATH=$ROOT/lib/x86_64-linux-gnu:$ROOT/usr/lib/x86_64-linux-gnu

# The guest's userland is one static busybox: the host's if it has
# busybox-static installed, else the one fetch.sh unpacked. (ldd fails on a
# static binary, which is what we want here.)
BUSYBOX=/bin/busybox
if ! [ -x "$BUSYBOX" ] || ldd "$BUSYBOX" >/dev/null 2>&1; then
    BUSYBOX=$ROOT/bin/busybox
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/run-v2.XXXXXX")
QEMU_PID='' SLEEP_PID=''
cleanup() {   # run by the EXIT trap
    # Only processes this script started, by their PIDs.
    if [ -n "$QEMU_PID" ]; then kill -KILL "$QEMU_PID" 2>/dev/null || true; fi
    if [ -n "$SLEEP_PID" ]; then kill "$SLEEP_PID" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'die "interrupted"' INT TERM

# --- The initramfs ----------------------------------------------------------
IRD=$TMP/initramfs
mkdir -p "$IRD"/{bin,opt/bin,etc/harness,modules,proc,sys,dev,tmp,run,root,var/lib}
ln -s bin "$IRD/sbin"
mkdir -p "$IRD/usr" && ln -s ../bin "$IRD/usr/bin" && ln -s ../bin "$IRD/usr/sbin"

cp "$BUSYBOX" "$IRD/bin/busybox"
# Relative links, so they stay valid in whatever root the guest ends up in.
for applet in $("$BUSYBOX" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$IRD/bin/$applet"
done

# Copy a file to the same absolute path inside the initramfs.
copy_same_path() { mkdir -p "$IRD$(dirname "$1")" && cp -L "$1" "$IRD$1"; }

for bin in "${BINS[@]}"; do
    [ -f "$bin" ] || die "--bin $bin: no such file"
    name=$(basename "$bin")
    [ ! -e "$IRD/opt/bin/$name" ] || die "--bin $bin: a program named $name is already there"
    cp -L "$bin" "$IRD/opt/bin/$name"
    # ldd prints 'libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)' and,
    # for the dynamic loader, '/lib64/ld-linux-x86-64.so.2 (0x...)'. A
    # static program or a script makes ldd fail: nothing to copy then.
    libs=$(ldd "$bin" 2>/dev/null || true)
    if grep -q 'not found' <<<"$libs"; then
        die "--bin $bin: missing libraries: $(grep 'not found' <<<"$libs" | tr -s ' \t' ' ')"
    fi
    for lib in $(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$libs"); do
        [ -e "$IRD$lib" ] || copy_same_path "$lib"
    done
done

# Kernel modules. Debian's cloud kernel builds overlayfs, veth and bridge as
# modules, and the package has no modules.dep (depmod makes it on install),
# so read each module's own 'depends=' entry from its .modinfo section and
# load dependencies first.
find_module() {   # file names may spell '_' as '-'
    find "$MODDIR" -name "$1.ko" -o -name "${1//_/-}.ko" | head -n1
}
LOAD_ORDER=()
add_module() {
    local name=$1 ko dep
    case " ${LOAD_ORDER[*]} " in *" $name "*) return ;; esac
    ko=$(find_module "$name")
    [ -n "$ko" ] || die "kernel module $name not found in $MODDIR (built in? then drop --module $name)"
    for dep in $(tr '\0' '\n' <"$ko" | sed -n 's/^depends=//p' | tr ',' ' '); do
        add_module "$dep"
    done
    cp "$ko" "$IRD/modules/$name.ko"
    LOAD_ORDER+=("$name")
}
for m in "${MODULES[@]}"; do add_module "$m"; done
printf '%s\n' "${LOAD_ORDER[@]}" >"$IRD/modules/order"

# COMMAND, its arguments and the --env values are written as single-quoted
# shell words, which the guest's shell takes literally: spaces, quotes, '$'
# and newlines all arrive intact, nothing is split or expanded.
shell_quote() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }
{
    printf 'set --'
    for arg in "$@"; do printf ' '; shell_quote "$arg"; done
    printf '\n'
} >"$IRD/etc/harness/args"
for kv in "${ENVS[@]}"; do
    [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env $kv: expected NAME=VALUE"
    printf 'export '; shell_quote "$kv"; printf '\n'
done >"$IRD/etc/harness/env"

# A few files that programs expect to find.
echo 'root:x:0:0:root:/root:/bin/sh' >"$IRD/etc/passwd"
echo 'root:x:0:' >"$IRD/etc/group"
echo '127.0.0.1 localhost' >"$IRD/etc/hosts"

# Stage 1, PID 1 in the initramfs. The initramfs is the kernel's 'rootfs',
# which can never be unmounted, so pivot_root(2) fails there with EINVAL -
# and container runtimes call pivot_root. So copy everything into a tmpfs
# and switch_root into it: there pivot_root works as on a real system.
cat >"$IRD/init" <<'EOF'
#!/bin/sh
export PATH=/bin
fail() { echo "GUEST-SETUP-FAILED: $*"; poweroff -f; }
mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
mkdir -p /dev/pts /dev/shm
mount -t devpts -o mode=0620,ptmxmode=0666 devpts /dev/pts || fail "mount /dev/pts"
mount -t tmpfs tmpfs /dev/shm || fail "mount /dev/shm"
for m in $(cat /modules/order); do
    insmod "/modules/$m.ko" || fail "insmod $m"
done
mkdir /newroot
mount -t tmpfs -o mode=0755 tmpfs /newroot || fail "mount tmpfs"
for f in /*; do
    case $f in /proc | /sys | /dev | /newroot | /modules | /init) ;; *) cp -a "$f" /newroot/ ;; esac
done
mkdir /newroot/proc /newroot/sys /newroot/dev
# Detach these mounts (init2 mounts them afresh in the new root) rather than
# leave them hidden under it. -l: the console may still be open.
umount -l /dev/pts /dev/shm /dev /sys /proc
# switch_root empties the initramfs, makes /newroot the root and execs init2.
exec switch_root /newroot /init2
EOF

# Stage 2, PID 1 in the tmpfs root: finish the system, run COMMAND, report
# its status on the console and power off (which ends QEMU).
cat >"$IRD/init2" <<'EOF'
#!/bin/sh
export PATH=/opt/bin:/bin
fail() { echo "GUEST-SETUP-FAILED: $*"; poweroff -f; }
mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
mkdir -p /dev/pts /dev/shm
mount -t devpts -o mode=0620,ptmxmode=0666 devpts /dev/pts || fail "mount /dev/pts"
mount -t tmpfs tmpfs /dev/shm || fail "mount /dev/shm"
exec </dev/console >/dev/console 2>&1
mount -t cgroup2 cgroup2 /sys/fs/cgroup || fail "mount cgroup2"
mount -t tmpfs -o mode=1777 tmpfs /tmp || fail "mount /tmp"
mount -t tmpfs -o mode=0755 tmpfs /run || fail "mount /run"
mkdir -p /var/lib
ip link set lo up || fail "lo up"
hostname guest
. /etc/harness/env
. /etc/harness/args
# This busybox sh runs its own applets before searching PATH, so a --bin
# program named like an applet (ip, unshare, ...) is called by full path.
if [ -x "/opt/bin/$1" ]; then cmd=/opt/bin/$1; shift; set -- "$cmd" "$@"; fi
cd /
"$@" </dev/null
status=$?
echo "QEMU-EXIT-STATUS=$status"
sync
poweroff -f
EOF
chmod +x "$IRD/init" "$IRD/init2"

(cd "$IRD" && find . | "$BUSYBOX" cpio -o -H newc 2>/dev/null) | gzip -1 >"$TMP/initrd.gz"

# --- Boot -------------------------------------------------------------------
# TCG: KVM is not available on the CI machines. -no-reboot and panic=-1 turn
# a guest panic into a prompt QEMU exit. -nic none: the guest only needs lo
# (and this way no network boot ROM is needed). -L: QEMU's own firmware
# files, from the cache instead of /usr/share. -bios qboot.rom: a minimal
# firmware that only boots -kernel, quicker and quieter than SeaBIOS.
# QEMU writes the console to a FIFO that we copy to stdout and to a log.
mkfifo "$TMP/console"
"$QEMU" -accel tcg -m "$MEM" -smp 2 -nographic -no-reboot -nic none \
    -L "$ROOT/usr/share/qemu" -bios qboot.rom -vga none \
    -kernel "$KERNEL" -initrd "$TMP/initrd.gz" \
    -append "console=ttyS0 cgroup_no_v1=all panic=-1 quiet" \
    </dev/null >"$TMP/console" 2>&1 &
QEMU_PID=$!
# The serial console ends lines with \r\n; drop the \r for readable logs.
tr -d '\r' <"$TMP/console" | tee "$TMP/log" &
sleep "$TIMEOUT" &
SLEEP_PID=$!

# Whichever ends first: QEMU, or the timeout.
wait -n -p FINISHED "$QEMU_PID" "$SLEEP_PID" || true
if [ "$FINISHED" = "$SLEEP_PID" ]; then
    SLEEP_PID=
    # SIGKILL: a hung guest gets no say, and QEMU leaves nothing to clean up.
    kill -KILL "$QEMU_PID" 2>/dev/null || true
    wait "$QEMU_PID" || true
    QEMU_PID=
    wait   # for the console copy to finish
    echo "run-v2.sh: timed out after $TIMEOUT s; killed QEMU" >&2
    exit 124
fi
QEMU_PID=
kill "$SLEEP_PID" 2>/dev/null || true
SLEEP_PID=
wait || true   # the console copy ends when QEMU has closed the FIFO

status=$(sed -n 's/^.*QEMU-EXIT-STATUS=\([0-9][0-9]*\)$/\1/p' "$TMP/log" | tail -n1)
if [ -n "$status" ]; then
    exit "$status"
fi
reason=$(sed -n 's/^.*GUEST-SETUP-FAILED: //p' "$TMP/log" | tail -n1)
die "boot failure: ${reason:-the guest never reported an exit status (see the console output above)}"
