//! Stage 3: `run IMAGE CMD` runs in the image's root filesystem, entered with
//! pivot_root, with its own /proc, /dev and a read-only /sys.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use mydocker_stage_tests::{children_of, wait_with_timeout, Mydocker};

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
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let found = find_file(md.root(), &name);
    let pid = children_of(child.id());
    assert_eq!(pid.len(), 1, "{pid:?}");
    unsafe { libc::kill(pid[0] as i32, libc::SIGKILL) };
    wait_with_timeout(child, Duration::from_secs(30));
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
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(|e| e.ok()).any(|entry| {
        let kind = entry.file_type().unwrap();
        entry.file_name() == name || (kind.is_dir() && find_file(&entry.path(), name))
    })
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
                .any(|p| Path::new(mount_point).starts_with(p));
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
    mydocker_stage_tests::finish(command).success().to_string()
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
    append(&mut tar, tar::EntryType::Directory, "./bin/", 0o755, b"");
    let busybox = std::fs::read("/bin/busybox").expect("the host's static busybox");
    append(
        &mut tar,
        tar::EntryType::Regular,
        "./bin/busybox",
        0o755,
        &busybox,
    );
    append(
        &mut tar,
        tar::EntryType::Symlink,
        "./bin/sh",
        0o777,
        b"busybox",
    );
    append(
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
    let target = std::env::temp_dir().join(format!("mydocker-escape-{}", std::process::id()));
    std::fs::create_dir_all(&target).unwrap();
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
    std::fs::remove_dir(&target).unwrap();
}

fn append(
    tar: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    path: &str,
    mode: u32,
    data: &[u8],
) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    if kind == tar::EntryType::Symlink {
        header.set_size(0);
        tar.append_link(&mut header, path, std::str::from_utf8(data).unwrap())
            .unwrap();
    } else {
        header.set_size(data.len() as u64);
        tar.append_data(&mut header, path, data).unwrap();
    }
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
    let socket = format!("mydocker-test-{}", std::process::id());
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .args(["-L", &socket])
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
        tmux(&["kill-server"]);
    }
    assert!(seen, "the shell did not answer; the screen was:\n{text}");
    assert!(gone, "the shell did not exit");
}

#[test]
fn the_state_directory_is_private_to_root() {
    use std::os::unix::fs::PermissionsExt;
    let md = Mydocker::new();
    // As if created by hand, or by an older mydocker: readable by everyone.
    std::fs::set_permissions(md.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    md.run(&[], &["true"]).success();
    let mode = std::fs::metadata(md.root()).unwrap().mode() & 0o777;
    assert_eq!(
        mode, 0o700,
        "the host's users could reach the containers' files (mode {mode:o})"
    );
}
