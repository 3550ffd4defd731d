//! Pretend to be a kernel older than 5.8, on today's kernel.
//!
//! Since Linux 5.8, setns(2) takes a pidfd and a set of namespace flags,
//! and joins all those namespaces of that process in one call. Before,
//! it took only a file of /proc/PID/ns/, one namespace per call: its
//! flags argument is then 0 or the one flag of that file's namespace.
//! Asked for several namespaces at once, an old kernel says EINVAL, and
//! `mydocker exec` must fall back to the files.
//!
//! A test cannot boot an old kernel. It can make today's answer as an old
//! one would: a seccomp filter (a classic BPF program the kernel runs at
//! every system call of the filtered process) that fails setns(2) with
//! EINVAL when its flags have more than one bit set, `x & (x - 1) != 0`.
//! Every file setns still works, as it did then. So does a pidfd setns
//! with one flag, which an old kernel refused too (EINVAL: not a
//! namespace file); the filter cannot tell a pidfd from a namespace file
//! by its number, so an `exec` that joined through the pidfd one flag at
//! a time would pass here and fail on 5.7. The filter is installed in the child between fork and exec
//! ([`emulate`]), is inherited by whatever that process starts, and can
//! never be removed.
//!
//! It knows the system call numbers of x86_64 and aarch64; on any other
//! architecture it lets everything through, and [`probe`] says so.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

// Classic BPF, as <linux/filter.h> and <linux/bpf_common.h> spell it: an
// instruction class ORed with its mode, operation and source.
/// BPF_LD | BPF_W | BPF_ABS (0x00 | 0x00 | 0x20): A = the 32-bit word at
/// offset k of the system call's `struct seccomp_data`.
const BPF_LD_W_ABS: u16 = 0x20;
/// BPF_JMP | BPF_JEQ | BPF_K (0x05 | 0x10 | 0x00): if A == k skip jt
/// instructions, else jf.
const BPF_JEQ_K: u16 = 0x15;
/// BPF_MISC | BPF_TAX (0x07 | 0x00): X = A.
const BPF_TAX: u16 = 0x07;
/// BPF_ALU | BPF_SUB | BPF_K (0x04 | 0x10 | 0x00): A = A - k.
const BPF_SUB_K: u16 = 0x14;
/// BPF_ALU | BPF_AND | BPF_X (0x04 | 0x50 | 0x08): A = A & X.
const BPF_AND_X: u16 = 0x5c;
/// BPF_RET | BPF_K (0x06 | 0x00): the filter's verdict is k.
const BPF_RET_K: u16 = 0x06;

// struct seccomp_data { int nr; __u32 arch; __u64 ip; __u64 args[6]; }
const NR: u32 = 0;
const ARCH: u32 = 4;
/// The low 32 bits of args[1] (setns's flags, an int) on a little-endian
/// machine, which both architectures below are.
const ARG1_LOW: u32 = 16 + 8;

// <linux/audit.h>
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
const SETNS_X86_64: u32 = 308;
const SETNS_AARCH64: u32 = 268;

const fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The program. Jumps count the instructions to skip.
static FILTER: [libc::sock_filter; 14] = [
    /* 0 */ op(BPF_LD_W_ABS, 0, 0, ARCH),
    /* 1 */ op(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64), // -> 3, else 2
    /* 2 */ op(BPF_JEQ_K, 2, 10, AUDIT_ARCH_AARCH64), // -> 5, else allow
    /* 3 */ op(BPF_LD_W_ABS, 0, 0, NR),
    /* 4 */ op(BPF_JEQ_K, 2, 8, SETNS_X86_64), // -> 7, else allow
    /* 5 */ op(BPF_LD_W_ABS, 0, 0, NR),
    /* 6 */ op(BPF_JEQ_K, 0, 6, SETNS_AARCH64), // -> 7, else allow
    /* 7 */ op(BPF_LD_W_ABS, 0, 0, ARG1_LOW), // A = flags
    /* 8 */ op(BPF_TAX, 0, 0, 0), // X = flags
    /* 9 */ op(BPF_SUB_K, 0, 0, 1), // A = flags - 1
    /* 10 */ op(BPF_AND_X, 0, 0, 0), // A = flags & (flags - 1)
    /* 11 */ op(BPF_JEQ_K, 1, 0, 0), // at most one bit: allow
    /* 12 */
    op(
        BPF_RET_K,
        0,
        0,
        libc::SECCOMP_RET_ERRNO | libc::EINVAL as u32,
    ),
    /* 13 */ op(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
];

/// Install the filter in the calling thread (and so in every process it
/// starts from now on). Only system calls, no allocation: it may run
/// between fork and exec.
pub fn install() -> io::Result<()> {
    let program = libc::sock_fprog {
        len: FILTER.len() as u16,
        filter: FILTER.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl(2) with integer arguments, then with a pointer to a
    // program that outlives the call (the kernel copies it).
    unsafe {
        // Needed to install a filter without CAP_SYS_ADMIN; as root it
        // only keeps setuid programs from gaining privileges.
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &program as *const libc::sock_fprog as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Make `command` run as on a kernel before 5.8: the filter is installed
/// in its process before it executes.
pub fn emulate(command: &mut Command) -> &mut Command {
    // SAFETY: `install` makes only system calls.
    unsafe { command.pre_exec(install) }
}

/// What setns(2) answered in [`probe`]: 0, or the errno.
#[derive(Debug, PartialEq, Eq)]
pub struct Probe {
    /// Whether the filter knows this architecture's system call numbers.
    pub known_architecture: bool,
    /// Before the filter: setns(pidfd, CLONE_NEWUTS | CLONE_NEWIPC).
    pub pidfd_two_flags_before: i32,
    /// With the filter: the same call.
    pub pidfd_two_flags: i32,
    /// With the filter: setns(pidfd, CLONE_NEWUTS).
    pub pidfd_one_flag: i32,
    /// With the filter: setns(open("/proc/self/ns/uts"), CLONE_NEWUTS).
    pub file_one_flag: i32,
    /// With the filter: setns(open("/proc/self/ns/ipc"), 0).
    pub file_no_flag: i32,
}

/// Try the filter in a child process of its own (the test's process
/// keeps no filter): setns(2) into the child's own namespaces, which
/// changes nothing but says whether the call was let through.
pub fn probe() -> Probe {
    let known_architecture = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the array it is given.
    assert_eq!(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
        0,
        "pipe2: {}",
        io::Error::last_os_error()
    );
    let (read_end, write_end) = (fds[0], fds[1]);
    // SAFETY: the child makes only system calls (no allocation, no lock)
    // and leaves with _exit: safe after fork in a process with threads.
    let child = unsafe { libc::fork() };
    if child == 0 {
        unsafe {
            let errno = || *libc::__errno_location();
            let result = |r: libc::c_long| if r == 0 { 0 } else { errno() };
            let both = (libc::CLONE_NEWUTS | libc::CLONE_NEWIPC) as libc::c_long;
            let uts = libc::CLONE_NEWUTS as libc::c_long;
            let pidfd = libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0);
            let mut answers = [-1i32; 5];
            if pidfd >= 0 {
                answers[0] = result(libc::syscall(libc::SYS_setns, pidfd, both));
                if install().is_ok() {
                    answers[1] = result(libc::syscall(libc::SYS_setns, pidfd, both));
                    answers[2] = result(libc::syscall(libc::SYS_setns, pidfd, uts));
                    let file = libc::open(c"/proc/self/ns/uts".as_ptr(), libc::O_RDONLY);
                    answers[3] = result(libc::syscall(libc::SYS_setns, file, uts));
                    let file = libc::open(c"/proc/self/ns/ipc".as_ptr(), libc::O_RDONLY);
                    answers[4] = result(libc::syscall(libc::SYS_setns, file, 0));
                }
            }
            let bytes = answers.as_ptr() as *const libc::c_void;
            let size = std::mem::size_of_val(&answers);
            let written = libc::write(write_end, bytes, size);
            libc::_exit(if written == size as isize { 0 } else { 1 });
        }
    }
    assert!(child > 0, "fork: {}", io::Error::last_os_error());
    // SAFETY: closing our copy of the write end; reading into an array
    // of the right size; waiting for our own child.
    let mut answers = [-1i32; 5];
    unsafe {
        libc::close(write_end);
        let size = std::mem::size_of_val(&answers);
        let got = libc::read(read_end, answers.as_mut_ptr() as *mut libc::c_void, size);
        libc::close(read_end);
        let mut status = 0;
        libc::waitpid(child, &mut status, 0);
        assert!(
            got == size as isize && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the probe's child failed (read {got} bytes, status {status:#x})"
        );
    }
    Probe {
        known_architecture,
        pidfd_two_flags_before: answers[0],
        pidfd_two_flags: answers[1],
        pidfd_one_flag: answers[2],
        file_one_flag: answers[3],
        file_no_flag: answers[4],
    }
}
