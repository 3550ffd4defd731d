//! Stage 3: `run IMAGE CMD` runs in the image's root filesystem, entered with
//! pivot_root, with its own /proc, /dev and a read-only /sys.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mydocker_stage_tests::{
    cgroup_roots, children_of, descendants, eventually, kill_survivors, signal, start_time,
    tar_append, Mydocker, Outcome,
};

#[test]
fn the_root_is_the_image_and_nothing_of_the_host() {
    let md = Mydocker::new();
    // A file on the host, at a path that exists in the image too.
    let marker = format!("/tmp/mydocker-marker-{}", std::process::id());
    std::fs::write(&marker, "host").unwrap();
    let script = format!("ls /; test -e {marker} && echo LEAK; readlink /proc/1/root");
    let out = md.sh(&[], &script);
    std::fs::remove_file(&marker).unwrap();
    let stdout = out.success();
    for dir in ["bin", "dev", "etc", "proc", "root", "sys", "tmp"] {
        assert!(
            stdout.lines().any(|l| l == dir),
            "no /{dir} in the container:\n{stdout}"
        );
    }
    for host_only in ["boot", "work", "lib64", "LEAK"] {
        assert!(
            !stdout.lines().any(|l| l == host_only),
            "{host_only} seen inside:\n{stdout}"
        );
    }
    assert_eq!(
        stdout.lines().last(),
        Some("/"),
        "PID 1's root is the container's /"
    );
}

#[test]
fn the_containers_files_live_in_the_state_directory_until_it_ends() {
    let md = Mydocker::new();
    let name = format!("written-inside-{}", std::process::id());
    let mut child = md.spawn(
        &[],
        &[
            "sh",
            "-c",
            &format!("echo data > /tmp/{name}; echo ready; sleep 30"),
        ],
    );
    child.expect_line("ready");
    let found = find_file(md.root(), &name);
    let pid = children_of(child.id());
    assert_eq!(pid.len(), 1, "{pid:?}");
    signal(pid[0], libc::SIGKILL);
    child.wait();
    assert!(
        found,
        "{name}, written in the container, is nowhere under {}",
        md.root().display()
    );
    assert!(
        !find_file(md.root(), &name),
        "the container's files outlived it"
    );
}

/// Whether a file called `name` exists anywhere below `dir`.
fn find_file(dir: &Path, name: &str) -> bool {
    find_path(dir, name).is_some()
}

/// The path of a file called `name` anywhere below `dir` (symlinks are
/// not followed).
fn find_path(dir: &Path, name: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    for entry in entries.flatten() {
        if entry.file_name() == name {
            return Some(entry.path());
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            if let Some(found) = find_path(&entry.path(), name) {
                return Some(found);
            }
        }
    }
    None
}

#[test]
fn only_the_containers_own_mounts_are_visible() {
    let md = Mydocker::new();
    let out = md.run(&[], &["cat", "/proc/self/mountinfo"]);
    for line in out.success().lines() {
        let mount_point = line.split_whitespace().nth(4).unwrap();
        let own = mount_point == "/"
            || ["/proc", "/dev", "/sys"]
                .iter()
                .any(|p| Path::new(mount_point).starts_with(p))
            || md.etc_files().contains(&mount_point);
        assert!(own, "a host mount is visible in the container: {line}");
    }
}

#[test]
fn the_device_nodes_work() {
    let md = Mydocker::new();
    let out = md.sh(
        &[],
        "head -c 8 /dev/urandom | wc -c; head -c 4 /dev/zero | od -An -tx1; \
         echo gone > /dev/null && echo null-ok; echo x > /dev/full || echo full-refuses; \
         test -c /dev/tty && test -d /dev/pts && test -d /dev/shm && echo dirs-ok",
    );
    let stdout = out.success();
    let lines: Vec<&str> = stdout.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        ["8", "00 00 00 00", "null-ok", "full-refuses", "dirs-ok"],
        "{out:#?}"
    );
}

/// /dev is a tmpfs of the container's own with the harmless devices only:
/// the host's /dev, bind-mounted, would hand the container the host's
/// disks and memory.
#[test]
fn dev_is_a_fresh_tmpfs_with_only_harmless_devices() {
    let md = Mydocker::new();
    let out = md.sh(
        &[],
        "grep ' /dev ' /proc/self/mountinfo; echo --; \
         find /dev -xdev \\( -type b -o -type c \\) -exec stat -c '%F %t:%T %n' {} +",
    );
    let stdout = out.success();
    let (mount, devices) = stdout.split_once("--\n").unwrap_or(("", ""));
    let fstype = mount
        .split_once(" - ")
        .and_then(|(_, right)| right.split_whitespace().next());
    assert_eq!(
        fstype,
        Some("tmpfs"),
        "/dev is not a tmpfs of its own: {out:#?}"
    );
    let harmless = ["1:3", "1:5", "1:7", "1:8", "1:9", "5:0"];
    for line in devices.lines() {
        let numbers = line.split_whitespace().rev().nth(1).unwrap_or("");
        // stat prints the numbers in hexadecimal.
        let decimal: Vec<String> = numbers
            .split(':')
            .map(|n| u32::from_str_radix(n, 16).map_or(n.to_string(), |n| n.to_string()))
            .collect();
        assert!(
            line.starts_with("character special file")
                && harmless.contains(&decimal.join(":").as_str()),
            "a device that is not one of the harmless six is in /dev: {line}\n{out:#?}"
        );
    }
    assert_eq!(
        devices.lines().count(),
        6,
        "null, zero, full, random, urandom and tty: {out:#?}"
    );
}

#[test]
fn sys_is_read_only() {
    let md = Mydocker::new();
    // sysfs refuses to create files even when writable: look at the mount.
    let out = md.sh(
        &[],
        "ls /sys/kernel >/dev/null && echo readable; grep ' /sys ' /proc/self/mountinfo",
    );
    let stdout = out.success();
    assert!(stdout.starts_with("readable\n"), "{out:#?}");
    let options = stdout
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(5))
        .unwrap_or("");
    assert!(
        options.split(',').any(|o| o == "ro"),
        "/sys is not read-only: {out:#?}"
    );
}

#[test]
fn the_hostname_is_the_short_container_id() {
    let md = Mydocker::new();
    let first = md.run(&[], &["hostname"]).success().trim().to_string();
    let second = md.run(&[], &["hostname"]).success().trim().to_string();
    assert_eq!(first.len(), 12, "{first}");
    assert!(first.chars().all(|c| c.is_ascii_hexdigit()), "{first}");
    assert_ne!(first, second, "two containers, two IDs");
}

#[test]
fn the_environment_is_the_containers_not_the_hosts() {
    let md = Mydocker::new();
    let out = finish_env(&md);
    assert!(
        !out.contains("MYDOCKER_TEST_SECRET"),
        "a host variable leaked:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("PATH=") && l.contains("/bin")),
        "{out}"
    );
}

fn finish_env(md: &Mydocker) -> String {
    let mut command = md.command(&md.run_args(&[], &["env"]));
    command.env("MYDOCKER_TEST_SECRET", "from-the-host");
    md.finish(command).success().to_string()
}

#[test]
fn busybox_is_built_on_first_use_then_reused() {
    let md = Mydocker::new();
    let image = md.images().join("busybox.tar");
    assert!(!image.exists());
    md.run(&[], &["true"]).success();
    let first = std::fs::metadata(&image).expect("busybox image created on first use");
    md.run(&[], &["true"]).success();
    let second = std::fs::metadata(&image).unwrap();
    assert_eq!(
        (first.ino(), first.mtime()),
        (second.ino(), second.mtime()),
        "the image was rebuilt"
    );
}

#[test]
fn an_unknown_image_is_refused_and_the_known_ones_listed() {
    let md = Mydocker::new();
    md.run(&[], &["true"]).success(); // creates busybox
    let out = md.exec(&["run", "no-such-image", "true"]);
    let stderr = out.failure();
    assert!(
        stderr.contains("no-such-image") && stderr.contains("busybox"),
        "{out:#?}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{out:#?}");
    assert!(md.containers_left().is_empty());
}

#[test]
fn a_tarball_like_docker_export_runs_gzipped_with_devices() {
    let md = Mydocker::new();
    let mut tar = tar::Builder::new(Vec::new());
    tar_append(&mut tar, tar::EntryType::Directory, "./bin/", 0o755, b"");
    let busybox = std::fs::read("/bin/busybox").expect("the host's static busybox");
    tar_append(
        &mut tar,
        tar::EntryType::Regular,
        "./bin/busybox",
        0o755,
        &busybox,
    );
    tar_append(
        &mut tar,
        tar::EntryType::Symlink,
        "./bin/sh",
        0o777,
        b"busybox",
    );
    tar_append(
        &mut tar,
        tar::EntryType::Regular,
        "./hello",
        0o644,
        b"hello from an imported image\n",
    );
    let mut null = tar::Header::new_gnu();
    null.set_entry_type(tar::EntryType::Char);
    null.set_device_major(1).unwrap();
    null.set_device_minor(3).unwrap();
    null.set_mode(0o666);
    null.set_uid(0);
    null.set_gid(0);
    null.set_mtime(0);
    null.set_size(0);
    tar.append_data(&mut null, "./mynull", &[][..]).unwrap();
    let mut plain = tar.into_inner().unwrap();
    // A FIFO as GNU tar writes it: no device numbers at all.
    plain.truncate(plain.len() - 1024);
    plain.extend(raw_header("./myfifo", b'6', "", None));
    plain.extend([0u8; 1024]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &plain).unwrap();
    md.add_image("exported", &gz.finish().unwrap());

    let out = md.exec(&[
        "run",
        "exported",
        "/bin/busybox",
        "sh",
        "-c",
        "busybox cat /hello; busybox test -c /mynull && echo gone > /mynull && busybox test -p /myfifo && echo device-ok",
    ]);
    assert_eq!(out.success(), "hello from an imported image\ndevice-ok\n");
}

/// Entries that would write outside the container's root.
#[test]
fn hostile_tarballs_are_refused_and_leave_nothing() {
    let md = Mydocker::new();
    // Removed when the test ends, failed or not.
    let target_dir = tempfile::Builder::new()
        .prefix("mydocker-escape-")
        .tempdir()
        .unwrap();
    let target = target_dir.path().to_path_buf();
    let escapes: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            raw_tar(&[(
                "../../../../../../../..".to_string() + &target.join("dotdot").to_string_lossy(),
                b'0',
                "",
            )]),
        ),
        (
            "absolute",
            raw_tar(&[(
                target.join("absolute").to_string_lossy().into_owned(),
                b'0',
                "",
            )]),
        ),
        (
            "symlink",
            raw_tar(&[
                ("link".to_string(), b'2', &target.to_string_lossy()),
                ("link/through-symlink".to_string(), b'0', ""),
            ]),
        ),
        (
            "hardlink",
            raw_tar(&[(
                "passwd".to_string(),
                b'1',
                "../../../../../../../../etc/passwd",
            )]),
        ),
        (
            "device-through-symlink",
            [
                raw_header("link", b'2', &target.to_string_lossy(), None),
                raw_header("link/null", b'3', "", Some((1, 3))),
            ]
            .concat()
            .into_iter()
            .chain([0u8; 1024])
            .collect(),
        ),
        (
            "symlink-then-directory",
            [
                raw_header("link", b'2', &target.to_string_lossy(), None),
                raw_header("link", b'5', "", None),
            ]
            .concat()
            .into_iter()
            .chain([0u8; 1024])
            .collect(),
        ),
        (
            "host-disk",
            [raw_header("disk", b'4', "", Some((8, 0)))]
                .concat()
                .into_iter()
                .chain([0u8; 1024])
                .collect(),
        ),
        (
            "corrupt",
            b"this is not a tar archive at all, just text".repeat(40),
        ),
    ];
    let target_mode = std::fs::metadata(&target).unwrap().mode();
    for (name, tarball) in escapes {
        md.add_image(name, &tarball);
        let out = md.exec(&["run", name, "true"]);
        let stderr = out.failure();
        assert_eq!(
            stderr.trim().lines().count(),
            1,
            "one line for {name}: {out:#?}"
        );
        assert!(
            md.containers_left().is_empty(),
            "{name} left {:?}",
            md.containers_left()
        );
    }
    assert_eq!(
        std::fs::metadata(&target).unwrap().mode(),
        target_mode,
        "a hostile image changed a host directory"
    );
    let written: Vec<_> = std::fs::read_dir(&target).unwrap().collect();
    assert!(
        written.is_empty(),
        "a hostile image wrote on the host: {written:?}"
    );
}

/// A tar archive written byte by byte (the tar crate refuses to *write*
/// hostile paths): (path, type flag, link name) per entry, no data.
fn raw_tar(entries: &[(String, u8, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (path, kind, link) in entries {
        out.extend_from_slice(&raw_header(path, *kind, link, None));
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// One ustar header: path, type flag, link name, device numbers.
fn raw_header(path: &str, kind: u8, link: &str, device: Option<(u32, u32)>) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..path.len()].copy_from_slice(path.as_bytes());
    header[100..107].copy_from_slice(b"0000777");
    header[108..115].copy_from_slice(b"0000000");
    header[116..123].copy_from_slice(b"0000000");
    header[124..135].copy_from_slice(b"00000000000");
    header[136..147].copy_from_slice(b"00000000000");
    header[156] = kind;
    header[157..157 + link.len()].copy_from_slice(link.as_bytes());
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    if let Some((major, minor)) = device {
        header[329..336].copy_from_slice(format!("{major:07o}").as_bytes());
        header[337..344].copy_from_slice(format!("{minor:07o}").as_bytes());
    }
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    header.to_vec()
}

/// The headline: `mydocker run -ti busybox sh` gives an interactive shell.
/// Driven through tmux, which gives it a real terminal.
#[test]
fn run_ti_busybox_sh_is_an_interactive_shell() {
    let md = Mydocker::new();
    // The test's own tmux server, its socket in a directory that goes with
    // the test (tmux leaves a `-L` socket in /tmp/tmux-UID/ behind).
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("tmux");
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(args)
            .output()
            .expect("run tmux (apt-get install tmux)")
    };
    let mut args: Vec<String> = vec![md.bin().to_string_lossy().into_owned()];
    args.extend(md.run_args(&["-ti"], &["sh"]));
    let command = format!(
        "env MYDOCKER_ROOT={} {}",
        md.root().display(),
        args.join(" ")
    );
    assert!(
        tmux(&["new-session", "-d", "-x", "120", "-y", "30", &command])
            .status
            .success()
    );
    let screen = |want: &str| {
        let mut text = String::new();
        let seen = mydocker_stage_tests::eventually(Duration::from_secs(20), || {
            text = String::from_utf8_lossy(&tmux(&["capture-pane", "-p"]).stdout).into_owned();
            text.contains(want)
        });
        (seen, text)
    };
    tmux(&["send-keys", "echo $((6*7)) in $(hostname)", "Enter"]);
    let (seen, text) = screen("42 in ");
    tmux(&["send-keys", "exit", "Enter"]);
    let gone = mydocker_stage_tests::eventually(Duration::from_secs(20), || {
        !tmux(&["has-session"]).status.success()
    });
    if !gone {
        // Kill what the pane runs, by PID, then the test's own tmux server.
        let pane = tmux(&["display-message", "-p", "#{pane_pid}"]);
        if let Ok(pid) = String::from_utf8_lossy(&pane.stdout).trim().parse() {
            mydocker_stage_tests::kill_tree(pid);
        }
        tmux(&["kill-server"]);
    }
    assert!(seen, "the shell did not answer; the screen was:\n{text}");
    assert!(gone, "the shell did not exit");
}

/// A tarball of a minimal image: `bin/busybox` (the host's static one) and
/// `bin/sh`, then `extra` entries.
fn busybox_image(extra: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    tar_append(&mut tar, tar::EntryType::Directory, "bin/", 0o755, b"");
    let busybox = std::fs::read("/bin/busybox").expect("the host's static busybox");
    tar_append(
        &mut tar,
        tar::EntryType::Regular,
        "bin/busybox",
        0o755,
        &busybox,
    );
    tar_append(
        &mut tar,
        tar::EntryType::Symlink,
        "bin/sh",
        0o777,
        b"busybox",
    );
    extra(&mut tar);
    tar.into_inner().unwrap()
}

fn gzip(plain: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, plain).unwrap();
    gz.finish().unwrap()
}

/// The classic chroot escape (chroot(2) describes it): chroot into a
/// subdirectory without entering it, so that the current directory is
/// outside the new root; climb with `..`, which never meets the root; make
/// what is there the root. Then look for a path only the host has.
const CHROOT_ESCAPE: &str = r#"
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct stat st;
    if (argc != 2 || chdir("/tmp") != 0) return 2;
    mkdir("escape-dir", 0755);
    if (chroot("escape-dir") != 0) { perror("chroot(escape-dir)"); return 2; }
    for (int i = 0; i < 100; i++) chdir("..");
    if (chroot(".") != 0) { perror("chroot(.)"); return 2; }
    if (stat(argv[1], &st) == 0) printf("escaped: %s is there\n", argv[1]);
    else printf("contained\n");
    return 0;
}
"#;

/// Compile `source` with the host's C compiler, statically, so that it runs
/// in an image without a libc. Never skipped: no compiler is a failure.
fn compile_static(source: &str, dir: &Path) -> PathBuf {
    let c = dir.join("prog.c");
    let exe = dir.join("prog");
    std::fs::write(&c, source).unwrap();
    let out = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(&exe)
        .arg(&c)
        .output()
        .unwrap_or_else(|e| {
            panic!("this test compiles a small C program with `cc -static`, which could not run ({e}): install gcc and a static libc (scripts/setup.sh installs build-essential)")
        });
    assert!(
        out.status.success(),
        "cc -static failed (is the static libc, libc6-dev, installed?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// `chroot` only changes where one process resolves `/`: a root process
/// in a chroot walks back out to the host's root. After pivot_root and the
/// old root's detach, there is nothing to walk back to.
#[test]
fn a_chroot_escape_finds_only_the_image() {
    let md = Mydocker::new();
    let work = tempfile::tempdir().unwrap();
    let escape = std::fs::read(compile_static(CHROOT_ESCAPE, work.path())).unwrap();
    let image = busybox_image(|tar| {
        tar_append(tar, tar::EntryType::Directory, "tmp/", 0o1777, b"");
        tar_append(tar, tar::EntryType::Regular, "escape", 0o755, &escape);
    });
    // The probe: a path that exists on the host and not in the image.
    let host_only = md.root().to_string_lossy().into_owned();

    // First prove that the program escapes a chroot, on the host.
    let jail = work.path().join("jail");
    std::fs::create_dir(&jail).unwrap();
    tar::Archive::new(&image[..]).unpack(&jail).unwrap();
    let mut chroot = Command::new("chroot");
    chroot.arg(&jail).arg("/escape").arg(&host_only);
    let control = md.finish(chroot);
    assert_eq!(
        control.success(),
        format!("escaped: {host_only} is there\n"),
        "the escape does not work in a plain chroot on this host: {control:#?}"
    );

    md.add_image("escape", &image);
    let out = md.exec(&["run", "escape", "/escape", &host_only]);
    assert_eq!(
        out.success(),
        "contained\n",
        "a process in the container reached the host's root: {out:#?}"
    );
}

/// Device nodes and FIFOs are made with mknod(2), by mydocker, not by the
/// tar crate: their paths need the same checks as every other entry.
#[test]
fn fifo_and_device_entries_outside_the_image_are_refused() {
    let md = Mydocker::new();
    let target = tempfile::Builder::new()
        .prefix("mydocker-escape-")
        .tempdir()
        .unwrap();
    let t = target.path().to_string_lossy().into_owned();
    let climb = "../".repeat(20);
    // (image, entry path, type flag, device numbers)
    type Case<'a> = (&'a str, String, u8, Option<(u32, u32)>);
    let cases: [Case; 4] = [
        ("fifo-dotdot", format!("{climb}{t}/fifo-dotdot"), b'6', None),
        ("fifo-absolute", format!("{t}/fifo-absolute"), b'6', None),
        (
            "null-dotdot",
            format!("{climb}{t}/null-dotdot"),
            b'3',
            Some((1, 3)),
        ),
        (
            "null-absolute",
            format!("{t}/null-absolute"),
            b'3',
            Some((1, 3)),
        ),
    ];
    let mode = std::fs::metadata(target.path()).unwrap().mode();
    for (name, path, kind, device) in cases {
        let tarball: Vec<u8> = raw_header(&path, kind, "", device)
            .into_iter()
            .chain([0u8; 1024])
            .collect();
        md.add_image(name, &tarball);
        let out = md.exec(&["run", name, "true"]);
        out.one_line_failure();
        assert!(
            md.containers_left().is_empty(),
            "{name} left {:?}",
            md.containers_left()
        );
        let written: Vec<_> = std::fs::read_dir(target.path()).unwrap().collect();
        assert!(
            written.is_empty(),
            "the image {name} made a node on the host: {written:?}"
        );
    }
    assert_eq!(std::fs::metadata(target.path()).unwrap().mode(), mode);
}

/// Only the devices every container gets anyway may come from an image:
/// `c 1 1` is /dev/mem, the host's physical memory.
#[test]
fn only_the_harmless_character_devices_are_allowed() {
    let md = Mydocker::new();
    let refused: [(&str, u32, u32); 7] = [
        ("mem", 1, 1),
        ("kmem", 1, 2),
        ("port", 1, 4),
        ("kmsg", 1, 11),
        ("tty1", 4, 1),
        ("console", 5, 1),
        ("net-tun", 10, 200),
    ];
    for (name, major, minor) in refused {
        let tarball = busybox_image(|tar| {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Char);
            header.set_device_major(major).unwrap();
            header.set_device_minor(minor).unwrap();
            header.set_mode(0o666);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_size(0);
            tar.append_data(&mut header, name, &[][..]).unwrap();
        });
        md.add_image(name, &tarball);
        let out = md.exec(&["run", name, "/bin/busybox", "echo", "RAN"]);
        out.one_line_failure();
        assert!(
            !out.stdout.contains("RAN"),
            "an image with c {major} {minor} ran: {out:#?}"
        );
        assert!(md.containers_left().is_empty());
    }
}

/// What the image store holds: (name, size, inode, mtime) of each entry,
/// hidden ones included.
fn store(md: &Mydocker) -> Vec<(String, u64, u64, i64, i64)> {
    let mut entries: Vec<_> = std::fs::read_dir(md.images())
        .expect("read the image store")
        .flatten()
        .map(|e| {
            let meta = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                meta.len(),
                meta.ino(),
                meta.mtime(),
                meta.mtime_nsec(),
            )
        })
        .collect();
    entries.sort();
    entries
}

/// `images/` holds the images and nothing else: what a run leaves there
/// (a lock, a cache, a half-written copy) would be listed as an image, or
/// pile up.
#[test]
fn the_image_store_holds_only_the_images() {
    let md = Mydocker::new();
    md.run(&[], &["true"]).success();
    md.run(&[], &["true"]).success();
    let names: Vec<String> = store(&md).into_iter().map(|e| e.0).collect();
    assert_eq!(names, ["busybox.tar"], "the image store after two runs");
    md.add_image("other", &busybox_image(|_| {}));
    let before = store(&md);
    md.exec(&["run", "other", "/bin/busybox", "true"]).success();
    md.run(&[], &["true"]).success();
    assert_eq!(
        store(&md),
        before,
        "runs changed the image store (entries: name, size, inode, mtime)"
    );
}

/// pivot_root leaves the current directory where it was, on the host's
/// tree: mydocker must `chdir("/")` into the image.
#[test]
fn the_working_directory_is_the_images_root() {
    let md = Mydocker::new();
    let here = tempfile::tempdir().unwrap();
    let marker = format!("host-marker-{}", std::process::id());
    std::fs::write(here.path().join(&marker), "host").unwrap();
    let mut command = md.command(&md.run_args(&[], &["sh", "-c", "pwd; ls -a .; echo --; ls .."]));
    command.current_dir(here.path());
    let out = md.finish(command);
    let stdout = out.success();
    assert_eq!(stdout.lines().next(), Some("/"), "{out:#?}");
    assert!(
        !stdout.contains(&marker),
        "the container sees the host directory it was started from: {out:#?}"
    );
    let parent: Vec<&str> = stdout.split("--\n").nth(1).unwrap_or("").lines().collect();
    for dir in ["bin", "etc", "proc"] {
        assert!(
            parent.contains(&dir),
            "`ls ..` should list the image's root: {out:#?}"
        );
    }
}

/// An image keeps its modes: /tmp is 1777 (sticky: users cannot delete
/// each other's files), a set-user-ID program stays set-user-ID.
#[test]
fn special_mode_bits_survive_unpacking() {
    let md = Mydocker::new();
    let image = busybox_image(|tar| {
        tar_append(tar, tar::EntryType::Directory, "tmp/", 0o1777, b"");
        tar_append(tar, tar::EntryType::Directory, "shared/", 0o2775, b"");
        tar_append(tar, tar::EntryType::Regular, "suid", 0o4755, b"#!/bin/sh\n");
        tar_append(tar, tar::EntryType::Regular, "sgid", 0o2755, b"#!/bin/sh\n");
    });
    md.add_image("modes", &image);
    let out = md.exec(&[
        "run",
        "modes",
        "/bin/busybox",
        "stat",
        "-c",
        "%a %n",
        "/tmp",
        "/shared",
        "/suid",
        "/sgid",
    ]);
    assert_eq!(
        out.success(),
        "1777 /tmp\n2775 /shared\n4755 /suid\n2755 /sgid\n",
        "{out:#?}"
    );
}

/// The mode and owner of a directory, and what it is.
fn mode_owner(path: &Path) -> (u32, u32, u32) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.mode(), meta.uid(), meta.gid())
}

/// `--root DIR` uses DIR as it is: mydocker never changes the mode or
/// owner of a directory it did not create (`--root /tmp` must not break
/// /tmp), whether the run succeeds or fails, through a symlink too.
#[test]
fn an_existing_state_root_keeps_its_mode_and_owner() {
    let md = Mydocker::new();
    for mode in [0o755, 0o1777, 0o750, 0o555] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        std::os::unix::fs::chown(dir.path(), Some(0), Some(65534)).unwrap();
        let before = mode_owner(dir.path());
        let root = dir.path().to_string_lossy().into_owned();
        // A failing run first, on a root where nothing exists yet.
        md.exec(&["--root", &root, "run", "no-such-image", "true"])
            .one_line_failure();
        assert_eq!(
            mode_owner(dir.path()),
            before,
            "a failed run changed the mode or owner of the existing root {root} (mode, uid, gid)"
        );
        md.exec(&["--root", &root, "run", "busybox", "true"])
            .success();
        assert!(
            dir.path().join("images/busybox.tar").is_file(),
            "`--root {root}` was not used: no images/busybox.tar there"
        );
        assert_eq!(
            mode_owner(dir.path()),
            before,
            "a run changed the mode or owner of the existing root {root} (mode, uid, gid)"
        );
    }
    // A root that is a symlink to a directory: neither changes.
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let before = (mode_owner(&real), mode_owner(&link));
    let root = link.to_string_lossy().into_owned();
    md.exec(&["--root", &root, "run", "no-such-image", "true"])
        .one_line_failure();
    md.exec(&["--root", &root, "run", "busybox", "true"])
        .success();
    assert!(real.join("images/busybox.tar").is_file());
    assert_eq!(
        (mode_owner(&real), mode_owner(&link)),
        before,
        "a run changed the root's symlink or the directory it points to"
    );
}

/// mydocker runs, as root, the images and containers it finds under its
/// root: a root, `images/` or `containers/` that another user could change
/// is refused in one line, and nothing runs.
#[test]
fn a_state_root_that_other_users_could_change_is_refused() {
    let md = Mydocker::new();
    let nobody = |path: &Path| std::os::unix::fs::chown(path, Some(65534), Some(65534)).unwrap();
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    type Setup = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Setup)> = vec![
        (
            "a root that belongs to another user",
            Box::new(move |root: &Path| nobody(root)),
        ),
        (
            "a root writable by all, without the sticky bit",
            Box::new(move |root: &Path| mode(root, 0o777)),
        ),
        (
            "images/ of another user in a sticky root",
            Box::new(move |root: &Path| {
                mode(root, 0o1777);
                std::fs::create_dir(root.join("images")).unwrap();
                nobody(&root.join("images"));
            }),
        ),
        (
            "containers/ writable by all",
            Box::new(move |root: &Path| {
                std::fs::create_dir(root.join("containers")).unwrap();
                mode(&root.join("containers"), 0o777);
            }),
        ),
        (
            "containers/ as a symlink",
            Box::new(move |root: &Path| {
                std::fs::create_dir(root.join("elsewhere")).unwrap();
                std::os::unix::fs::symlink(root.join("elsewhere"), root.join("containers"))
                    .unwrap();
            }),
        ),
    ];
    for (what, setup) in cases {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path());
        let root = dir.path().to_string_lossy().into_owned();
        let out = md.exec(&["--root", &root, "run", "busybox", "sh", "-c", "echo RAN"]);
        assert!(
            !out.stdout.contains("RAN"),
            "{what}: the container ran: {out:#?}"
        );
        out.one_line_failure();
        assert!(
            !dir.path().join("images/busybox.tar").exists(),
            "{what}: mydocker wrote an image there"
        );
    }
}

/// Run a command as `nobody`, with no supplementary groups.
fn as_nobody(md: &Mydocker, args: &[&str]) -> Outcome {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(args)
        .stdin(Stdio::null());
    md.finish(command)
}

/// A container's files are the container's: the host's other users cannot
/// read them through the state root, even where the root itself is open to
/// them (a container's root can write a setuid-root program there).
#[test]
fn a_containers_files_are_out_of_reach_of_other_users() {
    let md = Mydocker::new();
    std::fs::set_permissions(md.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut running = md.start(
        &[],
        "echo the-secret > /tmp/secret-file; chmod 644 /tmp/secret-file; echo written; read x || true",
    );
    running.process().expect_line("written");
    let file = find_path(md.root(), "secret-file")
        .expect("the file written in the container is somewhere under the state root");
    let root = md.root().to_string_lossy().into_owned();
    // The test is fair: nobody can enter the root that the test opened.
    let ls = as_nobody(&md, &["ls", &root]);
    assert_eq!(
        ls.code,
        Some(0),
        "the user nobody cannot list the state root, which the test made mode 755 (now {:o}): mydocker must not change an existing root: {ls:#?}",
        std::fs::metadata(md.root()).unwrap().mode() & 0o7777
    );
    let out = as_nobody(&md, &["cat", &file.to_string_lossy()]);
    assert!(
        out.code != Some(0) && !out.stdout.contains("the-secret"),
        "the user nobody read {}, a file of the container: {out:#?}",
        file.display()
    );
    running.finish().success();
}

/// gzip ends with a CRC32 of the data: an image whose CRC is wrong is
/// corrupt, and refused before it runs (the tar reader stops at the end of
/// the archive, before gzip's trailer: it must be read and checked).
#[test]
fn a_gzip_image_with_a_bad_checksum_is_refused() {
    let md = Mydocker::new();
    let good = gzip(&busybox_image(|_| {}));
    md.add_image("good", &good);
    let out = md.exec(&["run", "good", "/bin/busybox", "echo", "RAN"]);
    assert_eq!(out.success(), "RAN\n", "the intact image must run");
    let n = good.len();
    let mut bad_crc = good.clone();
    bad_crc[n - 8] ^= 0xff; // the trailer: CRC32, then the length, 4 bytes each
    let mut bad_length = good.clone();
    bad_length[n - 4] ^= 0x01;
    let truncated = good[..n - 8].to_vec();
    for (name, tarball) in [
        ("bad-crc", bad_crc),
        ("bad-length", bad_length),
        ("no-trailer", truncated),
    ] {
        assert_refused(&md, name, &tarball, "the corrupt image ran");
    }
}

/// The size of the last entry of [`big_image`]: big enough that writing it
/// takes a while (a fraction of a second on a fast disk).
const BIG: u64 = 300 << 20;

/// The name of that entry.
const BIG_NAME: &str = "zz-big-file";

/// What follows the archive's end marker: a gzip file may hold several
/// members (`cat a.gz b.gz`), all of which are the image; but a second
/// archive appended after the end marker would be silently left out, so an
/// image with anything but zeros there is refused.
#[test]
fn the_whole_image_is_read_and_nothing_after_its_end() {
    let md = Mydocker::new();
    let plain = busybox_image(|tar| {
        tar_append(
            tar,
            tar::EntryType::Regular,
            "last",
            0o644,
            b"in the second member\n",
        );
    });
    // Two gzip members, cut in the middle of busybox's data.
    let half = plain.len() / 2;
    let two_members = [gzip(&plain[..half]), gzip(&plain[half..])].concat();
    md.add_image("members", &two_members);
    let out = md.exec(&["run", "members", "/bin/busybox", "cat", "/last"]);
    assert_eq!(
        out.success(),
        "in the second member\n",
        "an image of two gzip members must be read whole"
    );
    // A second archive after the first one's end marker.
    let second = busybox_image(|tar| {
        tar_append(tar, tar::EntryType::Regular, "hidden", 0o644, b"x\n");
    });
    for (name, tarball) in [
        ("appended", [plain.clone(), second.clone()].concat()),
        ("appended-gz", [gzip(&plain), gzip(&second)].concat()),
    ] {
        assert_refused(
            &md,
            name,
            &tarball,
            "an image with a second archive after its end ran",
        );
    }
}

/// Run image `name` (made of `tarball`): refused in one line, before the
/// command runs, and nothing of it left.
fn assert_refused(md: &Mydocker, name: &str, tarball: &[u8], what: &str) {
    md.add_image(name, tarball);
    let out = md.exec(&["run", name, "/bin/busybox", "echo", "RAN"]);
    assert!(!out.stdout.contains("RAN"), "{name}: {what}: {out:#?}");
    out.one_line_failure();
    assert!(
        md.containers_left().is_empty(),
        "{name} left {:?}",
        md.containers_left()
    );
}

/// Add an image whose last entry is a big file of zeros, gzip-compressed
/// by the host's gzip (fast) so that the tarball stays small.
fn add_big_image(md: &Mydocker, name: &str) {
    std::fs::create_dir_all(md.images()).unwrap();
    let file = std::fs::File::create(md.images().join(format!("{name}.tar"))).unwrap();
    let mut gzip = Command::new("gzip")
        .arg("-1")
        .stdin(Stdio::piped())
        .stdout(file)
        .spawn()
        .expect("run gzip");
    let mut tar = tar::Builder::new(gzip.stdin.take().unwrap());
    tar_append(&mut tar, tar::EntryType::Directory, "bin/", 0o755, b"");
    let busybox = std::fs::read("/bin/busybox").unwrap();
    tar_append(
        &mut tar,
        tar::EntryType::Regular,
        "bin/busybox",
        0o755,
        &busybox,
    );
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(BIG);
    tar.append_data(&mut header, BIG_NAME, std::io::repeat(0).take(BIG))
        .unwrap();
    drop(tar.into_inner().unwrap());
    let status = gzip.wait().unwrap();
    assert!(status.success(), "gzip failed");
}

/// Start `run big /bin/busybox echo RAN` and wait until the big file is
/// being written under the state root, less than half of it: the moment
/// to interrupt the unpack. None when the moment was missed (the file was
/// written too fast for the test to see it half-way).
fn catch_the_unpack(md: &Mydocker) -> (mydocker_stage_tests::Spawned, Option<PathBuf>) {
    let mut child = md.spawn_command(md.command(&["run", "big", "/bin/busybox", "echo", "RAN"]));
    let mut found = None;
    let seen = eventually(Duration::from_secs(20), || {
        found = find_path(md.root(), BIG_NAME).filter(|p| !p.starts_with(md.images()));
        found.is_some() || !child.is_running()
    });
    let Some(path) = found else {
        if seen {
            let out = child.wait();
            panic!("run ended before the image's last entry, {BIG_NAME}, appeared under the state root: {out:#?}");
        }
        panic!(
            "waited 20 s for the image's last entry, {BIG_NAME}, to appear under the state root {}",
            md.root().display()
        );
    };
    let half_way = std::fs::metadata(&path).is_ok_and(|m| m.len() < BIG / 2);
    (child, half_way.then_some(path))
}

/// A signal that comes while the image is unpacked, with no container yet
/// to pass it to, must not be lost: even during the very last entry, `run`
/// stops before the command starts, exits 128 + the signal, says so in one
/// line, and leaves nothing behind.
#[test]
fn sigterm_during_the_unpack_stops_run_before_the_container_starts() {
    let md = Mydocker::new();
    add_big_image(&md, "big");
    for attempt in 1..=3 {
        let (child, half_way) = catch_the_unpack(&md);
        let pid = child.id();
        signal(pid, libc::SIGTERM);
        let out = child.wait();
        if half_way.is_none() {
            // The signal may have come after the file was complete: try
            // again, that attempt proves nothing.
            assert!(attempt < 3, "could not catch the unpack half-way: {out:#?}");
            eprintln!("attempt {attempt}: the signal may have come after the last entry; again");
            eventually(Duration::from_secs(5), || md.containers_left().is_empty());
            continue;
        }
        assert!(
            !out.stdout.contains("RAN"),
            "SIGTERM came while the image was unpacked, yet the command ran: {out:#?}"
        );
        assert_eq!(out.code, Some(128 + 15), "{out:#?}");
        out.one_line_failure();
        assert!(
            md.containers_left().is_empty(),
            "an interrupted run left {:?}",
            md.containers_left()
        );
        return;
    }
}

/// SIGKILL cannot be caught: a run killed during the unpack leaves its
/// half-unpacked image (in its container's directory; from stage 4, in
/// the image's unpacked copy that was being made). The next run notices
/// and removes it.
#[test]
fn a_run_killed_during_the_unpack_is_cleaned_up_by_the_next_run() {
    let md = Mydocker::new();
    add_big_image(&md, "big");
    let (child, _) = catch_the_unpack(&md);
    signal(child.id(), libc::SIGKILL);
    assert_eq!(child.wait().code, None, "mydocker should die of SIGKILL");
    let unpacked = || find_path(md.root(), BIG_NAME).filter(|p| !p.starts_with(md.images()));
    assert!(
        unpacked().is_some(),
        "nothing of the image under {} after a kill -9 during the unpack: where did it unpack?",
        md.root().display()
    );
    md.run(&[], &["true"]).success();
    assert!(
        md.containers_left().is_empty(),
        "the next run left the killed run's {:?}",
        md.containers_left()
    );
    if let Some(path) = unpacked() {
        panic!(
            "the next run left the killed run's half-unpacked image: {}",
            path.display()
        );
    }
}

/// A run killed with SIGKILL while its container runs: the container dies
/// with it (stage 1), and the next run removes its files and its cgroups.
#[test]
fn a_run_killed_while_its_container_runs_is_cleaned_up_by_the_next_run() {
    let _lock = mydocker_stage_tests::cgroups_shared();
    let md = Mydocker::new();
    let running = md.start(&["-m", "64m"], "read x || true");
    let cgroups = running.container_cgroups();
    assert!(
        !cgroups.is_empty(),
        "no container cgroup: {}",
        running.cgroups
    );
    let left = md.containers_left();
    assert_eq!(left.len(), 1, "one container directory: {left:?}");
    let id = left[0].clone();
    let processes: Vec<(u32, Option<u64>)> = descendants(running.id())
        .into_iter()
        .map(|p| (p, start_time(p)))
        .collect();
    signal(running.id(), libc::SIGKILL);
    assert_eq!(
        running.finish().code,
        None,
        "mydocker should die of SIGKILL"
    );
    // Whether the container died with mydocker is another test's business:
    // make sure it did, so that this test looks at the clean-up only.
    assert!(kill_survivors(&processes));
    md.run(&[], &["true"]).success();
    let left = md.containers_left();
    let cgroups_left: Vec<&PathBuf> = cgroups.iter().filter(|d| d.exists()).collect();
    let by_id: Vec<PathBuf> = cgroup_roots()
        .into_iter()
        .map(|r| r.join("mydocker").join(&id))
        .filter(|d| d.exists())
        .collect();
    // Leave nothing behind, whatever the verdict.
    md.forget_killed_run(&cgroups);
    mydocker_stage_tests::remove_cgroups(&by_id);
    assert!(
        left.is_empty(),
        "the next run left the killed run's container directory: {left:?}"
    );
    assert!(
        cgroups_left.is_empty() && by_id.is_empty(),
        "the next run left the killed container's cgroups: {cgroups_left:?} {by_id:?}"
    );
}

/// The clean-up of killed runs must tell them from live ones: a run that
/// starts while another one's container runs leaves that container alone.
#[test]
fn a_running_container_is_never_cleaned_up_by_another_run() {
    let md = Mydocker::new();
    let mut first = md.start(
        &[],
        "echo kept > /tmp/first-file; echo written; read x || true; cat /tmp/first-file",
    );
    first.process().expect_line("written");
    let path = find_path(md.root(), "first-file")
        .expect("the first container's file is somewhere under the state root");
    md.run(&[], &["true"]).success();
    md.run(&[], &["true"]).success();
    assert_eq!(
        std::fs::read_to_string(&path).ok().as_deref(),
        Some("kept\n"),
        "a second run removed the files of a container that still runs"
    );
    let out = first.finish();
    assert_eq!(out.success(), "written\nkept\n", "{out:#?}");
}
