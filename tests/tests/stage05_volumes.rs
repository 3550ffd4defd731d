//! Stage 5: volumes. `run -v HOST:CTR[:ro|:rw]` shows a host directory (or
//! file, or a named volume kept under the state root) at CTR in the
//! container, resolved inside the container's root and mounted in its
//! mount namespace only; `volume ls` and `volume rm` manage the named ones.
//!
//! Every host directory the tests use lies in a temporary directory of the
//! test's own. The images with hostile symlinks point only there, so that
//! a binary that follows them on the host harms nothing but that directory,
//! where the test sees it. `:ro` is tried only on a tmpfs of the test's own
//! (see [`read_only`]).

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use mydocker_stage_tests::{
    descendants, differences, host_mounts, kill_survivors, signal, snapshot, start_time, walk,
    ImageTar, Mydocker, Outcome, Snapshot,
};

/// A directory of the test's own on the host, removed when the test ends.
fn host_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mydocker-volumes-")
        .tempdir()
        .expect("create a temporary directory")
}

/// A new directory `name` in `dir`, holding the files `files` (name,
/// content).
fn make_dir(dir: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let path = dir.join(name);
    std::fs::create_dir(&path).unwrap();
    for (file, content) in files {
        std::fs::write(path.join(file), content).unwrap();
    }
    path
}

/// The spec `HOST:CTR` (and `:MODE`).
fn spec(host: &Path, ctr: &str) -> String {
    format!("{}:{ctr}", host.display())
}

/// Everything below `dir`, symlinks not followed: sorted relative paths,
/// directories with a trailing `/`, symlinks with ` -> TARGET`.
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for (path, meta) in walk(dir) {
        let rel = path.strip_prefix(dir).unwrap().display().to_string();
        if meta.is_dir() {
            found.push(format!("{rel}/"));
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap();
            found.push(format!("{rel} -> {}", target.display()));
        } else {
            found.push(rel);
        }
    }
    found.sort();
    found
}

/// The lines of the host's mount table that mention `path`.
fn host_mounts_of(path: &Path) -> Vec<String> {
    let path = path.to_string_lossy().into_owned();
    host_mounts()
        .lines()
        .filter(|line| line.contains(&path))
        .map(String::from)
        .collect()
}

/// Where the named volumes are: `<root>/volumes/NAME`.
fn volumes_dir(md: &Mydocker) -> PathBuf {
    md.root().join("volumes")
}

/// What `<root>/volumes` holds: the named volumes, and anything else
/// made there.
fn volumes_left(md: &Mydocker) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(volumes_dir(md))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `mydocker run` with `-v` for each of `specs` (as `--volume=SPEC` when
/// it starts with `-`, which would read as an option).
fn run_with(md: &Mydocker, specs: &[&str], image: &str, command: &[&str]) -> Outcome {
    let mut args = vec!["run".to_string()];
    for spec in specs {
        if spec.starts_with('-') {
            args.push(format!("--volume={spec}"));
        } else {
            args.push("-v".to_string());
            args.push(spec.to_string());
        }
    }
    args.push(image.to_string());
    args.extend(command.iter().map(|s| s.to_string()));
    md.exec(&args)
}

/// What the host directory holds, read by the container and back: files
/// the host wrote before and during the run are there for the container,
/// and what the container writes is in the host directory while it runs
/// and after it ended (the same files, not a copy).
#[test]
fn a_host_directory_is_shared_both_ways() {
    let md = Mydocker::new();
    let host = host_dir();
    let src = make_dir(
        host.path(),
        "src",
        &[("from-host", "written by the host\n")],
    );
    let mut running = md.start(
        &["-v", &spec(&src, "/data")],
        "cat /data/from-host; echo written in the container > /data/from-container; \
         echo 'appended in the container' >> /data/from-host; echo written; \
         read x || true; cat /data/later; ls /data",
    );
    let before = running.process().read_until("written");
    assert_eq!(
        before,
        "written by the host\n",
        "the container should read, in /data, the file the host wrote in {}",
        src.display()
    );
    assert_eq!(
        std::fs::read_to_string(src.join("from-container"))
            .ok()
            .as_deref(),
        Some("written in the container\n"),
        "while the container runs, what it wrote in /data should be in the host directory {}",
        src.display()
    );
    assert_eq!(
        std::fs::read_to_string(src.join("from-host")).unwrap(),
        "written by the host\nappended in the container\n",
        "what the container appended to /data/from-host should be in the host's file"
    );
    std::fs::write(src.join("later"), "written by the host while it runs\n").unwrap();
    let out = running.finish();
    assert!(
        out.success()
            .ends_with("written by the host while it runs\nfrom-container\nfrom-host\nlater\n"),
        "the container should read the file the host wrote while it ran, and see its own files: {out:#?}"
    );
    assert_eq!(
        tree(&src),
        ["from-container", "from-host", "later"],
        "after the run, the host directory should hold what the container wrote"
    );
    // The long option, and `:rw` said out loud.
    let out = md.exec(&[
        "run",
        "--volume",
        &format!("{}:rw", spec(&src, "/mnt/vol")),
        "busybox",
        "sh",
        "-c",
        "cat /mnt/vol/from-container && echo again > /mnt/vol/again",
    ]);
    assert_eq!(
        out.success(),
        "written in the container\n",
        "--volume HOST:CTR:rw"
    );
    assert_eq!(
        std::fs::read_to_string(src.join("again")).ok().as_deref(),
        Some("again\n"),
        "with --volume HOST:CTR:rw the container's write should reach the host"
    );
}

/// `:ro` is tried on a tmpfs mounted in a mount namespace of the test's
/// own (mydocker runs in it): a binary that remounts the whole file system
/// read-only (`MS_REMOUNT|MS_RDONLY` without `MS_BIND`) then harms only
/// that tmpfs, not the disk of the machine, and the test sees it.
/// `$1` is the tmpfs; the script's output follows `script`'s.
fn read_only(md: &Mydocker, src: &Path, script: &str) -> Outcome {
    let script = format!("mount -t tmpfs -o size=8m,mode=755 vol \"$1\" || exit 99\n{script}");
    let out = md.in_mount_namespace(&script, &[src]);
    assert_ne!(
        out.code,
        Some(99),
        "the test could not mount its tmpfs: {out:#?}"
    );
    out
}

/// `:ro` makes the volume read-only for the container: writing, creating,
/// removing, even touching fail with EROFS, and the host's files are
/// intact. The same directory mounted read-write at the same time stays
/// writable there, and the host can still write to it (a bind mount is
/// made read-only by a second step on that mount alone, never on the file
/// system).
#[test]
fn a_read_only_volume_refuses_writes_and_keeps_the_host_files() {
    let md = Mydocker::new();
    let host = host_dir();
    let src = make_dir(host.path(), "src", &[]);
    let script = r#"
        echo original > "$1/file"; mkdir "$1/dir"
        "$MYDOCKER" run -v "$1:/data:ro" -v "$1:/rw" busybox sh -c '
            cat /data/file
            echo changed > /data/file && echo WROTE
            echo new > /data/new && echo CREATED
            rm /data/file && echo REMOVED
            mkdir /data/newdir && echo MADE-DIR
            rmdir /data/dir && echo REMOVED-DIR
            touch /data/file && echo TOUCHED
            echo through-rw > /rw/via-rw && cat /data/via-rw'
        echo "rc=$?"
        echo "host: $(cat "$1/file")"
        ls -A "$1"
        echo by-the-host > "$1/after" && echo HOST-CAN-WRITE
    "#;
    let out = read_only(&md, &src, script);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "original",
            "through-rw",
            "rc=0",
            "host: original",
            "dir",
            "file",
            "via-rw",
            "HOST-CAN-WRITE"
        ],
        "with -v SRC:/data:ro the container reads /data but changes nothing in it (no WROTE, CREATED, REMOVED, MADE-DIR, REMOVED-DIR, TOUCHED), the same SRC at /rw without :ro is writable, and the host keeps its files and can still write: {out:#?}"
    );
    let erofs = out
        .stderr
        .lines()
        .filter(|l| l.contains("Read-only file system"))
        .count();
    assert!(
        erofs >= 5,
        "each write to a :ro volume should fail with EROFS, `Read-only file system`: {out:#?}"
    );
}

/// A mount inside the source (here a tmpfs on SRC/sub) comes along into
/// the container (volumes are recursive binds, like Docker's), and `:ro`
/// covers it too: the container cannot write SRC/sub either. Without
/// `:ro`, both are writable.
#[test]
fn read_only_covers_the_mounts_inside_the_volume() {
    let md = Mydocker::new();
    let host = host_dir();
    let src = make_dir(host.path(), "src", &[]);
    let script = r#"
        mkdir "$1/sub" && mount -t tmpfs -o size=8m,mode=755 sub "$1/sub" || exit 99
        echo outer > "$1/outer"; echo inner > "$1/sub/inner"
        "$MYDOCKER" run -v "$1:/data:ro" busybox sh -c '
            cat /data/outer /data/sub/inner
            echo x > /data/sub/x && echo WROTE-SUB
            echo x > /data/x && echo WROTE-TOP
            echo ro-done'
        echo "rc=$?"
        "$MYDOCKER" run -v "$1:/data" busybox sh -c '
            cat /data/sub/inner
            echo rw > /data/sub/rw && echo WROTE-SUB'
        echo "rc=$?"
        ls -A "$1" "$1/sub"
    "#;
    let out = read_only(&md, &src, script);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "outer",
            "inner",
            "ro-done",
            "rc=0",
            "inner",
            "WROTE-SUB",
            "rc=0",
            &format!("{}:", src.display()),
            "outer",
            "sub",
            "",
            &format!("{}/sub:", src.display()),
            "inner",
            "rw",
        ],
        "with a tmpfs mounted on SRC/sub: -v SRC:/data:ro shows the tmpfs at /data/sub and refuses writes there and in /data (no WROTE-SUB, WROTE-TOP in the first run); -v SRC:/data shows it writable: {out:#?}"
    );
}

/// A host directory that does not exist is created, with its missing
/// parents, mode 755 whatever the umask of the user who runs mydocker
/// (077 here), and it stays after the container with what it wrote.
#[test]
fn a_missing_host_directory_is_created_and_kept() {
    let md = Mydocker::new();
    let host = host_dir();
    let missing = host.path().join("a/b/c");
    let mut command = md.command(&[
        "run",
        "-v",
        &spec(&missing, "/data"),
        "busybox",
        "sh",
        "-c",
        "stat -c %a /data && echo kept > /data/file",
    ]);
    // SAFETY: umask(2) is async-signal-safe and touches no memory.
    unsafe {
        command.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    }
    let out = md.finish(command);
    let seen = out.success();
    assert_eq!(
        tree(host.path()),
        ["a/", "a/b/", "a/b/c/", "a/b/c/file"],
        "-v {}:/data: the missing directory should be made, with its parents, and stay after the run with what the container wrote",
        missing.display()
    );
    for dir in ["a", "a/b", "a/b/c"] {
        let meta = std::fs::symlink_metadata(host.path().join(dir)).unwrap();
        assert_eq!(
            (format!("{:o}", meta.mode() & 0o7777), meta.uid(), meta.gid()),
            ("755".to_string(), 0, 0),
            "{dir}, made for -v {}:/data by a mydocker whose umask was 077, should have mode 755 and belong to root (mode, uid, gid): set the mode after mkdir, the umask takes bits away (dockerd sets its own umask to 022 for this)",
            missing.display()
        );
    }
    assert_eq!(
        seen, "755\n",
        "the made directory, seen from the container (stat -c %a /data)"
    );
}

/// Several volumes at once, each at its place; and nested ones, given in
/// any order: `-v B:/data/sub -v A:/data` mounts A first, then B inside it
/// (on a directory `sub` made in A, as Docker does).
#[test]
fn several_volumes_at_once_and_nested_ones() {
    let md = Mydocker::new();
    let host = host_dir();
    let one = make_dir(host.path(), "one", &[("f", "one\n")]);
    let two = make_dir(host.path(), "two", &[("f", "two\n")]);
    let three = make_dir(host.path(), "three", &[("f", "three\n")]);
    let file = host.path().join("file");
    std::fs::write(&file, "a file\n").unwrap();
    let out = run_with(
        &md,
        &[
            &spec(&one, "/one"),
            &spec(&two, "/two"),
            &spec(&three, "/deep/in/three"),
            "named-vol:/named",
            &spec(&file, "/etc/file"),
        ],
        "busybox",
        &[
            "sh",
            "-c",
            "cat /one/f /two/f /deep/in/three/f /etc/file; echo in-named > /named/f; \
             for d in one two deep/in/three; do echo \"$d\" > /$d/w; done",
        ],
    );
    assert_eq!(
        out.success(),
        "one\ntwo\nthree\na file\n",
        "five volumes at once: each shows its own source"
    );
    for (dir, name) in [(&one, "one"), (&two, "two"), (&three, "deep/in/three")] {
        assert_eq!(
            std::fs::read_to_string(dir.join("w")).ok(),
            Some(format!("{name}\n")),
            "what the container wrote in /{name} should be in {}",
            dir.display()
        );
    }
    let out = run_with(&md, &["named-vol:/again"], "busybox", &["cat", "/again/f"]);
    assert_eq!(out.success(), "in-named\n", "the named volume, run after");

    // Nested, the inner one given first.
    let outer = make_dir(host.path(), "outer", &[("f", "outer\n")]);
    let inner = make_dir(host.path(), "inner", &[("f", "inner\n")]);
    let out = run_with(
        &md,
        &[&spec(&inner, "/data/sub"), &spec(&outer, "/data")],
        "busybox",
        &[
            "sh",
            "-c",
            "cat /data/f /data/sub/f; echo w > /data/sub/w; echo w > /data/w",
        ],
    );
    assert_eq!(
        out.success(),
        "outer\ninner\n",
        "-v INNER:/data/sub -v OUTER:/data: /data shows OUTER and /data/sub INNER, whatever the order of the options"
    );
    assert_eq!(
        tree(&outer),
        ["f", "sub/", "w"],
        "OUTER should hold its file, what the container wrote in /data, and the empty mount point `sub` of the inner volume"
    );
    assert_eq!(
        tree(&inner),
        ["f", "w"],
        "what the container wrote in /data/sub should be in INNER"
    );
}

/// An existing host file is bound as a file: onto a file of the image
/// (hiding it), onto a missing path (made, with its parents, as an empty
/// file in the container's layer), and what the container writes reaches
/// the host's file. The next container sees the image as it was.
#[test]
fn a_host_file_can_be_a_volume() {
    let md = Mydocker::new();
    let host = host_dir();
    let file = host.path().join("config");
    std::fs::write(&file, "from the host\n").unwrap();
    let out = run_with(
        &md,
        &[
            &spec(&file, "/etc/passwd"),
            &spec(&file, "/etc/new.conf"),
            &spec(&file, "/opt/app/app.conf"),
        ],
        "busybox",
        &[
            "sh",
            "-c",
            "cat /etc/passwd /etc/new.conf /opt/app/app.conf; \
             test -f /opt/app/app.conf && test -d /opt/app && echo file-in-dir; \
             echo appended >> /opt/app/app.conf",
        ],
    );
    assert_eq!(
        out.success(),
        "from the host\nfrom the host\nfrom the host\nfile-in-dir\n",
        "the host file bound at /etc/passwd (a file of the image), /etc/new.conf and /opt/app/app.conf (missing)"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "from the host\nappended\n",
        "what the container appended should be in the host's file"
    );
    let out = md.exec(&[
        "run",
        "busybox",
        "sh",
        "-c",
        "head -c 5 /etc/passwd; echo; test -e /etc/new.conf || echo no-new-conf; test -e /opt || echo no-opt",
    ]);
    assert_eq!(
        out.success(),
        "root:\nno-new-conf\nno-opt\n",
        "a container without volumes sees the image's /etc/passwd, and none of the mount points the previous one made"
    );
}

/// A named volume (`-v NAME:/data`) is a directory under the state root,
/// `volumes/NAME`, made on first use, kept after the container: the next
/// containers find its files, wherever they mount it, and two running at
/// once share it. Another name is another volume.
#[test]
fn named_volumes_keep_their_data_across_containers() {
    let md = Mydocker::new();
    let out = run_with(
        &md,
        &["data:/data"],
        "busybox",
        &[
            "sh",
            "-c",
            "stat -c %a /data; ls -A /data; echo kept > /data/file; mkdir /data/d; echo deep > /data/d/f",
        ],
    );
    assert_eq!(
        out.success(),
        "755\n",
        "a new named volume is an empty directory of mode 755"
    );
    let dir = volumes_dir(&md).join("data");
    assert!(
        dir.is_dir(),
        "the named volume `data` should be the directory {}",
        dir.display()
    );
    let found = {
        let mut found = Vec::new();
        let mut dirs = vec![dir.clone()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    dirs.push(e.path());
                } else if e.file_name() == "file" {
                    found.push(e.path());
                }
            }
        }
        found
    };
    assert_eq!(
        found.len(),
        1,
        "the file the container wrote in the volume should be under {}: {found:?}",
        dir.display()
    );
    let out = run_with(
        &md,
        &["data:/elsewhere"],
        "busybox",
        &["sh", "-c", "cat /elsewhere/file /elsewhere/d/f"],
    );
    assert_eq!(
        out.success(),
        "kept\ndeep\n",
        "the next container should find the volume's files"
    );
    let out = run_with(
        &md,
        &["other-data:/data"],
        "busybox",
        &["ls", "-A", "/data"],
    );
    assert_eq!(out.success(), "", "another name is another, empty, volume");
    let first = md.start(
        &["-v", "data:/data"],
        "read x || true; cat /data/from-second",
    );
    let out = run_with(
        &md,
        &["data:/data"],
        "busybox",
        &["sh", "-c", "echo shared > /data/from-second"],
    );
    out.success();
    assert_eq!(
        first.finish().success(),
        "shared\n",
        "a running container should see what another one wrote meanwhile in the volume they share"
    );
    assert_eq!(volumes_left(&md), ["data", "other-data"]);
}

/// `volume create NAME` makes a volume and prints its name (again: fine);
/// `volume ls` prints Docker's table, sorted by name, and `-q` the names
/// only. Host directories are not volumes; bad names are refused in one
/// line and nothing is made; `--root` picks the state root as for `run`.
#[test]
fn volume_create_and_ls_list_the_named_volumes() {
    let md = Mydocker::new();
    let out = md.exec(&["volume", "ls"]);
    assert_eq!(
        out.success(),
        "DRIVER    VOLUME NAME\n",
        "`volume ls` with no volume: the header only"
    );
    assert_eq!(md.exec(&["volume", "ls", "-q"]).success(), "");
    for _ in 0..2 {
        let out = md.exec(&["volume", "create", "b-vol"]);
        assert_eq!(
            out.success(),
            "b-vol\n",
            "`volume create b-vol` prints the name, even when it exists"
        );
    }
    let host = host_dir();
    run_with(
        &md,
        &[
            "c_vol:/c",
            "a.vol:/a",
            &spec(&host.path().join("bind"), "/b"),
        ],
        "busybox",
        &["true"],
    )
    .success();
    let out = md.exec(&["volume", "ls"]);
    assert_eq!(
        out.success(),
        "DRIVER    VOLUME NAME\nlocal     a.vol\nlocal     b-vol\nlocal     c_vol\n",
        "`volume ls`: the named volumes, sorted by name (a host directory is not one)"
    );
    let out = md.exec(&["volume", "ls", "-q"]);
    assert_eq!(out.success(), "a.vol\nb-vol\nc_vol\n", "`volume ls -q`");
    for bad in ["x", "-x", ".x", "a/b", "..", "../escape", "a b"] {
        let args = if bad.starts_with('-') {
            vec!["volume", "create", "--", bad]
        } else {
            vec!["volume", "create", bad]
        };
        let out = md.exec(&args);
        assert_eq!(
            out.code,
            Some(125),
            "`volume create {bad}`: not a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+), refused with 125: {out:#?}"
        );
        out.one_line_failure();
    }
    assert_eq!(
        volumes_left(&md),
        ["a.vol", "b-vol", "c_vol"],
        "the refused names should have made nothing"
    );
    assert!(
        !md.root().join("escape").exists(),
        "`volume create ../escape` made {}",
        md.root().join("escape").display()
    );
    // --root, before and after the subcommand's name.
    let other = tempfile::Builder::new()
        .prefix("mydocker-other-root-")
        .tempdir()
        .unwrap();
    let other_root = other.path().to_str().unwrap();
    let out = md.exec(&["--root", other_root, "volume", "create", "elsewhere"]);
    assert_eq!(out.success(), "elsewhere\n");
    let out = md.exec(&["--root", other_root, "volume", "ls", "-q"]);
    assert_eq!(
        out.success(),
        "elsewhere\n",
        "`--root DIR volume ls` lists DIR's volumes"
    );
    assert_eq!(
        md.exec(&["volume", "ls", "-q"]).success(),
        "a.vol\nb-vol\nc_vol\n",
        "a volume made with another --root is not in this one"
    );
}

/// `volume rm NAME...` removes each volume with its files and prints its
/// name; an unknown name is refused (`no such volume: NAME`, exit 125)
/// but the others are still removed. Removing never follows the symlinks
/// that a container left in the volume.
#[test]
fn volume_rm_removes_volumes_and_their_files() {
    let md = Mydocker::new();
    let host = host_dir();
    let precious = make_dir(host.path(), "precious", &[("keep", "keep me\n")]);
    let script = format!(
        "mkdir -p /v/d/e && echo x > /v/d/e/f && ln -s {p} /v/dir-link && ln -s {p}/keep /v/file-link",
        p = precious.display()
    );
    for name in ["one", "two", "three"] {
        run_with(
            &md,
            &[&format!("{name}:/v")],
            "busybox",
            &["sh", "-c", &script],
        )
        .success();
    }
    let out = md.exec(&["volume", "rm", "one", "no-such", "three"]);
    assert_eq!(
        out.code,
        Some(125),
        "`volume rm one no-such three` should fail with 125 for the unknown name: {out:#?}"
    );
    assert!(
        out.one_line_failure().contains("no such volume: no-such"),
        "the message should be `no such volume: no-such`: {out:#?}"
    );
    assert_eq!(
        out.stdout, "one\nthree\n",
        "`volume rm` prints the name of each volume it removed"
    );
    assert_eq!(
        volumes_left(&md),
        ["two"],
        "the known volumes should be removed despite the unknown one"
    );
    assert_eq!(
        md.exec(&["volume", "ls", "-q"]).success(),
        "two\n",
        "`volume ls -q` after the removal"
    );
    assert_eq!(md.exec(&["volume", "rm", "two"]).success(), "two\n");
    assert_eq!(volumes_left(&md), Vec::<String>::new());
    assert_eq!(
        tree(&precious),
        ["keep"],
        "removing volumes that held symlinks to {} should leave it alone",
        precious.display()
    );
    // A removed volume is gone: the same name gives a new, empty one.
    let out = run_with(&md, &["one:/v"], "busybox", &["ls", "-A", "/v"]);
    assert_eq!(
        out.success(),
        "",
        "a volume made again after `volume rm` is empty"
    );
    // Names that are not volume names never reach outside volumes/.
    md.exec(&["volume", "rm", "one"]).success();
    for bad in ["..", "../images", "../containers", "/tmp"] {
        let out = md.exec(&["volume", "rm", bad]);
        assert_eq!(
            out.code,
            Some(125),
            "`volume rm {bad}` should be refused: {out:#?}"
        );
        out.one_line_failure();
    }
    assert!(
        md.images().join("busybox.tar").is_file(),
        "`volume rm ../images` removed the image store"
    );
}

/// `volume rm` refuses a volume that a running container uses, in one
/// line naming the container's short ID (its hostname), exit 125, and the
/// volume keeps its files; once the container ended it is removed. A run
/// killed with SIGKILL is not running: it holds no volume.
#[test]
fn volume_rm_is_refused_while_a_running_container_uses_it() {
    let md = Mydocker::new();
    let mut running = md.start(
        &["-v", "busy:/data"],
        "echo kept > /data/file; cat /proc/sys/kernel/hostname; echo written; \
         read x || true; echo after > /data/after; cat /data/file",
    );
    let id = running.process().read_until("written").trim().to_string();
    assert_eq!(
        id.len(),
        12,
        "the container's hostname, its short ID: {id:?}"
    );
    let out = md.exec(&["volume", "rm", "busy"]);
    assert_eq!(
        out.code,
        Some(125),
        "`volume rm busy` while a running container uses it should fail with 125: {out:#?}"
    );
    assert!(
        out.one_line_failure().contains(&id),
        "the refusal should name the container that uses the volume, {id}: {out:#?}"
    );
    assert_eq!(out.stdout, "", "nothing was removed: {out:#?}");
    assert_eq!(volumes_left(&md), ["busy"]);
    assert_eq!(
        std::fs::read_to_string(volumes_dir(&md).join("busy/file"))
            .ok()
            .or_else(|| std::fs::read_to_string(volumes_dir(&md).join("busy/_data/file")).ok())
            .as_deref(),
        Some("kept\n"),
        "the refused volume should keep its files"
    );
    let out = running.finish();
    assert!(
        out.success().ends_with("kept\n"),
        "the container should go on using its volume after the refused `volume rm`: {out:#?}"
    );
    assert_eq!(
        md.exec(&["volume", "rm", "busy"]).success(),
        "busy\n",
        "once the container ended, `volume rm` removes the volume"
    );
    assert_eq!(volumes_left(&md), Vec::<String>::new());

    // `run` killed with SIGKILL, its container with it.
    let running = md.start(&["-v", "held:/data"], "read x || true");
    let cgroups = running.container_cgroups();
    let processes: Vec<(u32, Option<u64>)> = descendants(running.id())
        .into_iter()
        .map(|p| (p, start_time(p)))
        .collect();
    signal(running.id(), libc::SIGKILL);
    assert_eq!(running.finish().code, None);
    assert!(kill_survivors(&processes));
    let out = md.exec(&["volume", "rm", "held"]);
    md.forget_killed_run(&cgroups);
    assert_eq!(
        out.success(),
        "held\n",
        "after `run` was killed with SIGKILL (its container with it), no running container uses the volume"
    );
}

/// As many `..` as it takes to reach `/` from anywhere under the state
/// root, and some more.
fn up_to_root(md: &Mydocker) -> String {
    "../".repeat(md.root().components().count() + 8)
}

/// A busybox image whose symlinks lead out of the container when
/// followed on the host: `/data -> /etc`, absolute `/evil -> TARGET`,
/// where TARGET is a directory of the test's own on the host, and the
/// relative `/mid/link -> ../evil`. The image has TARGET's path as
/// directories too (and `/target`), so that in the container these links
/// lead somewhere; `/dangling -> ELSEWHERE`, a host directory the image
/// lacks, leads nowhere in the container. (mydocker refuses to unpack a
/// relative link that climbs above the image; a container can still make
/// one in a volume, which the tests do.)
fn hostile_image(target: &Path, elsewhere: &Path) -> ImageTar {
    let mut image = ImageTar::new()
        .root_dir(0o755, 0, 0)
        .busybox()
        .dir("etc", 0o755)
        .file("etc/image-file", 0o644, b"from the image\n")
        .dir("target", 0o755);
    let mut path = PathBuf::new();
    for part in target.strip_prefix("/").unwrap().components() {
        path.push(part);
        image = image.dir(path.to_str().unwrap(), 0o755);
    }
    image
        .symlink("data", "/etc")
        .symlink("evil", target.to_str().unwrap())
        .symlink("dangling", elsewhere.to_str().unwrap())
        .dir("mid", 0o755)
        .symlink("mid/link", "../evil")
}

/// Symlinks are followed as the container sees them, inside its root,
/// never on the host. With `/evil -> TARGET` in the image (TARGET is a
/// host directory too), `-v SRC:/evil/sub` puts SRC at TARGET/sub *in the
/// container*, and nothing appears in the host's TARGET; the same through
/// a relative link in the middle of the path. Symlinks in a volume count
/// as well: one that a first container left in a named volume (absolute,
/// or relative and climbing above the root: runc's CVE-2021-30465 took
/// that road), and one in the user's own directory. `/data -> /etc` with
/// `-v SRC:/data` shows SRC as the container's /etc. A link to a path the
/// container lacks may be refused or followed (made in the container's
/// layer), never followed on the host.
#[test]
fn symlinks_never_lead_a_volume_out_of_the_container() {
    let md = Mydocker::new();
    let host = host_dir();
    let target = make_dir(host.path(), "target", &[]);
    let elsewhere = make_dir(host.path(), "elsewhere", &[]);
    md.add_image("hostile", &hostile_image(&target, &elsewhere).into_bytes());
    let nothing_in_target = |what: &str| {
        for dir in [&target, &elsewhere] {
            assert_eq!(
                tree(dir),
                Vec::<String>::new(),
                "{what} made something in the host directory {}, which a symlink points to: the path was followed on the host",
                dir.display()
            );
        }
    };
    for (i, ctr) in ["/evil", "/evil/sub/deeper", "/mid/link", "/mid/link/x"]
        .into_iter()
        .enumerate()
    {
        let src = make_dir(host.path(), &format!("src{i}"), &[("from-src", "in SRC\n")]);
        let script =
            format!("cat {ctr}/from-src && echo from the container > {ctr}/written && ls -A {ctr}");
        let out = run_with(&md, &[&spec(&src, ctr)], "hostile", &["sh", "-c", &script]);
        assert_eq!(
            out.success(),
            "in SRC\nfrom-src\nwritten\n",
            "-v SRC:{ctr}: the container should find SRC at {ctr}, as it resolves that path in its own root"
        );
        assert_eq!(
            tree(&src),
            ["from-src", "written"],
            "-v SRC:{ctr}: what the container wrote at {ctr} should be in SRC"
        );
        nothing_in_target(&format!("-v SRC:{ctr}"));
    }
    // /data -> /etc: the volume covers the container's /etc.
    let src = make_dir(host.path(), "etc-src", &[("from-src", "in SRC\n")]);
    let out = run_with(
        &md,
        &[&spec(&src, "/data")],
        "hostile",
        &[
            "sh",
            "-c",
            "ls -A /etc; cat /etc/from-src; test -e /etc/image-file && echo IMAGE-FILE-SEEN; true",
        ],
    );
    assert_eq!(
        out.success(),
        "from-src\nin SRC\n",
        "with /data -> /etc in the image, -v SRC:/data should show SRC at the container's /etc"
    );
    // A link that leads nowhere in the container: refused, or followed
    // in the container.
    for (i, ctr) in ["/dangling", "/dangling/sub"].into_iter().enumerate() {
        let src = make_dir(host.path(), &format!("dangling-src{i}"), &[]);
        let script = format!("echo from the container > {ctr}/written");
        let out = run_with(&md, &[&spec(&src, ctr)], "hostile", &["sh", "-c", &script]);
        if out.code == Some(0) {
            assert_eq!(
                tree(&src),
                ["written"],
                "-v SRC:{ctr}, with {ctr} through a link to a path the container lacks: the run worked, so the container's write should be in SRC"
            );
        } else {
            assert_eq!(
                out.code,
                Some(125),
                "-v SRC:{ctr} through a link to a path the container lacks: either made in the container or refused with 125: {out:#?}"
            );
            out.one_line_failure();
        }
        nothing_in_target(&format!("-v SRC:{ctr}"));
    }
    // Symlinks on the way that a first container left in a named volume,
    // and one in a host directory: `hop -> ../target` is TARGET on the
    // host, but /target in the container.
    let target_str = target.to_str().unwrap();
    let script = format!(
        "ln -s {target_str} /shared/abs && ln -s {}{} /shared/rel",
        up_to_root(&md),
        target_str.trim_start_matches('/')
    );
    run_with(&md, &["planted:/shared"], "hostile", &["sh", "-c", &script]).success();
    let own = make_dir(host.path(), "own", &[]);
    std::os::unix::fs::symlink("../target", own.join("hop")).unwrap();
    let own_spec = spec(&own, "/own");
    for (i, (outer, ctr)) in [
        ("planted:/shared", "/shared/abs/x"),
        ("planted:/shared", "/shared/rel/x"),
        (own_spec.as_str(), "/own/hop/x"),
    ]
    .into_iter()
    .enumerate()
    {
        let src = make_dir(host.path(), &format!("through-src{i}"), &[]);
        let out = run_with(
            &md,
            &[outer, &spec(&src, ctr)],
            "hostile",
            &["sh", "-c", &format!("echo through > {ctr}/written")],
        );
        out.success();
        assert_eq!(
            tree(&src),
            ["written"],
            "-v {outer} -v SRC:{ctr}: the container's write should be in SRC"
        );
        nothing_in_target(&format!(
            "-v {outer} -v SRC:{ctr}, with a symlink in the outer volume on the way,"
        ));
    }
}

/// What the image copies under `layers` hold (see [`snapshot`]). Files
/// directly in `layers` are left out: they are the runtime's notes about
/// its copies (mydocker's digest cache, rewritten when a tarball's digest
/// could not be trusted yet), not the copies.
fn copies(layers: &Path) -> Snapshot {
    let mut found = snapshot(layers);
    found.retain(|path, (mode, ..)| {
        path.components().count() > 1 || *mode & libc::S_IFMT == libc::S_IFDIR
    });
    found
}

/// The mount points that are missing in the image are made in the
/// container's own layer: the image's shared copy (everything under
/// `<root>/layers`) does not change, and the next container, without
/// volumes, sees none of them.
#[test]
fn mount_points_are_made_in_the_containers_layer_not_in_the_image() {
    let md = Mydocker::new();
    let host = host_dir();
    let target = make_dir(host.path(), "target", &[]);
    let elsewhere = make_dir(host.path(), "elsewhere", &[]);
    md.add_image("hostile", &hostile_image(&target, &elsewhere).into_bytes());
    md.exec(&["run", "hostile", "true"]).success();
    let layers = md.root().join("layers");
    let before = copies(&layers);
    assert!(
        !before.is_empty(),
        "the image's copy should be under {}",
        layers.display()
    );
    let src = make_dir(host.path(), "src", &[]);
    let file = host.path().join("file");
    std::fs::write(&file, "a file\n").unwrap();
    let out = run_with(
        &md,
        &[
            &spec(&src, "/new/deep/point"),
            &spec(&src, "/etc/sub"),
            &spec(&file, "/etc/new.conf"),
            &spec(&src, "/evil/sub"),
            &spec(&src, "/mid/made"),
        ],
        "hostile",
        &[
            "sh",
            "-c",
            "test -d /new/deep/point && test -d /etc/sub && test -f /etc/new.conf && test -d /evil/sub && test -d /mid/made && echo made",
        ],
    );
    assert_eq!(
        out.success(),
        "made\n",
        "the mount points, in the container"
    );
    let changes = differences(&before, &copies(&layers));
    assert!(
        changes.is_empty(),
        "the image's shared copy under {} changed: mount points must be made in the container's own layer:\n{}",
        layers.display(),
        changes.join("\n")
    );
    let out = md.exec(&[
        "run",
        "hostile",
        "sh",
        "-c",
        "ls -A /etc; test -e /new || echo no-new; test -e /mid/made || echo no-made; ls -A /mid",
    ]);
    // From stage 9 on, /etc also holds the container's own hostname,
    // hosts and resolv.conf (mount points in its own layer).
    let listed: String = out
        .success()
        .lines()
        .filter(|l| !md.etc_files().contains(&format!("/etc/{l}").as_str()))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        listed,
        "image-file\nno-new\nno-made\nlink\n",
        "the next container, without volumes, should see the image as it is, none of the previous one's mount points"
    );
    assert_eq!(
        tree(&target),
        Vec::<String>::new(),
        "the host directory an image symlink points to"
    );
    assert_eq!(
        tree(&src),
        Vec::<String>::new(),
        "SRC got nothing but mounts"
    );
}

/// A symlink in the image that leads through a magic link of /proc
/// (`/data -> /proc/self/fd/0`, whose target is whatever file the
/// resolving process has open: here, with `-i`, a host directory given
/// as standard input) is refused in one line, and nothing is made in that
/// host directory.
#[test]
fn a_path_through_a_proc_magic_link_is_refused() {
    let md = Mydocker::new();
    let host = host_dir();
    let image = ImageTar::new()
        .root_dir(0o755, 0, 0)
        .busybox()
        .symlink("data", "/proc/self/fd/0")
        .symlink("fd", "/proc/self/fd")
        .symlink("stdin", "/dev/stdin");
    md.add_image("magic", &image.into_bytes());
    let opened = make_dir(host.path(), "opened", &[]);
    let src = make_dir(host.path(), "src", &[]);
    // The first four go through the image's links; the last two through
    // the links mydocker makes in /dev, which the image never shows.
    for ctr in [
        "/data/sub",
        "/data",
        "/fd/0/sub",
        "/stdin/sub",
        "/dev/stdin/sub",
        "/dev/fd/0/sub",
    ] {
        let mut command = md.command(&[
            "run",
            "-i",
            "-v",
            &spec(&src, ctr),
            "magic",
            "sh",
            "-c",
            "echo RAN",
        ]);
        command.stdin(std::fs::File::open(&opened).unwrap());
        let out = md.finish(command);
        assert!(
            !out.stdout.contains("RAN"),
            "-v SRC:{ctr}, through the magic link /proc/self/fd/0, should be refused: {out:#?}"
        );
        out.one_line_failure();
        assert_eq!(
            tree(&opened),
            Vec::<String>::new(),
            "-v SRC:{ctr} made something in the host directory that was the container's standard input: the magic link was followed"
        );
        assert_eq!(tree(&src), Vec::<String>::new(), "-v SRC:{ctr}: SRC");
    }
}

/// Volumes are mounted after /dev (a tmpfs of the container's own): one
/// at `/dev/myvol` is visible, not hidden under it.
#[test]
fn a_volume_under_dev_is_visible() {
    let md = Mydocker::new();
    let host = host_dir();
    let src = make_dir(host.path(), "src", &[("f", "in SRC\n")]);
    let file = host.path().join("file");
    std::fs::write(&file, "a file\n").unwrap();
    let out = run_with(
        &md,
        &[&spec(&src, "/dev/myvol"), &spec(&file, "/dev/myfile")],
        "busybox",
        &[
            "sh",
            "-c",
            "cat /dev/myvol/f /dev/myfile; echo w > /dev/myvol/w; test -c /dev/null && echo dev-ok",
        ],
    );
    assert_eq!(
        out.success(),
        "in SRC\na file\ndev-ok\n",
        "-v SRC:/dev/myvol and -v FILE:/dev/myfile: both visible in the container's /dev, which is still its own"
    );
    assert_eq!(
        tree(&src),
        ["f", "w"],
        "the container's write in /dev/myvol"
    );
}

/// Volumes are mounted in the container's mount namespace only: while a
/// container with a host directory, a file and a named volume runs, the
/// host's mount table names none of them (nor the state root), and
/// after it ended neither.
#[test]
fn nothing_of_a_volume_is_mounted_on_the_host() {
    let md = Mydocker::new();
    let host = host_dir();
    let src = make_dir(host.path(), "src", &[]);
    let file = host.path().join("file");
    std::fs::write(&file, "a file\n").unwrap();
    let specs = [
        "-v".to_string(),
        spec(&src, "/data"),
        "-v".to_string(),
        spec(&file, "/etc/file"),
        "-v".to_string(),
        "named:/named".to_string(),
    ];
    let options: Vec<&str> = specs.iter().map(String::as_str).collect();
    let mut running = md.start(
        &options,
        "cat /proc/self/mountinfo; echo listed; read x || true",
    );
    let mountinfo = running.process().read_until("listed");
    for point in ["/data", "/etc/file", "/named"] {
        assert!(
            mountinfo
                .lines()
                .any(|l| l.split_whitespace().nth(4) == Some(point)),
            "the container's mount table should show its volume at {point}:\n{mountinfo}"
        );
    }
    let check = |when: &str| {
        for path in [host.path(), md.root()] {
            let seen = host_mounts_of(path);
            assert!(
                seen.is_empty(),
                "{when}, the host's mount table names {}:\n{}",
                path.display(),
                seen.join("\n")
            );
        }
    };
    check("while the container runs");
    running.finish().success();
    check("after the container ended");
}

/// Every malformed `-v` is refused before anything is made: one line on
/// stderr, exit 125, no container, no directory for a missing HOST (not
/// even for a good spec given with the bad one), no named volume.
#[test]
fn malformed_volume_specs_are_refused_and_make_nothing() {
    let md = Mydocker::new();
    let host = host_dir();
    let file = host.path().join("a-file");
    std::fs::write(&file, "a file\n").unwrap();
    let dir = make_dir(host.path(), "a-dir", &[]);
    let m = |name: &str| host.path().join(name).display().to_string();
    let f = file.display().to_string();
    let d = dir.display().to_string();
    md.add_image(
        "links",
        &ImageTar::new()
            .root_dir(0o755, 0, 0)
            .busybox()
            .dir("etc", 0o755)
            .file("etc/passwd", 0o644, b"root:x:0:0::/:/bin/sh\n")
            .symlink("cfg", "/etc")
            .symlink("pw", "etc/passwd")
            .symlink("nowhere", "/no/such/dir")
            .symlink("fd", "/proc/self/fd/0")
            .into_bytes(),
    );
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("busybox", vec![m("m")], "no colon"),
        ("busybox", vec![":/data".into()], "an empty HOST"),
        ("busybox", vec![format!("{}:", m("m"))], "an empty CTR"),
        ("busybox", vec![":".into()], "both sides empty"),
        (
            "busybox",
            vec![format!("{}:/data:", m("m"))],
            "an empty mode",
        ),
        (
            "busybox",
            vec![format!("{}:data", m("m"))],
            "a relative CTR",
        ),
        ("busybox", vec![format!("{}:/", m("m"))], "CTR /"),
        (
            "busybox",
            vec![format!("{}://./", m("m"))],
            "CTR / once normalised",
        ),
        (
            "busybox",
            vec![format!("{}:/data/../etc", m("m"))],
            "CTR with ..",
        ),
        ("busybox", vec![format!("{}:/..", m("m"))], "CTR /.."),
        ("busybox", vec![format!("{}:/proc", m("m"))], "CTR /proc"),
        (
            "busybox",
            vec![format!("{}:/proc/sys", m("m"))],
            "CTR under /proc",
        ),
        (
            "busybox",
            vec![format!("{}:/data:rx", m("m"))],
            "an unknown mode",
        ),
        (
            "busybox",
            vec![format!("{}:/data:ro:x", m("m"))],
            "four parts",
        ),
        (
            "busybox",
            vec![format!("{}:/data", m("m1")), format!("{}:/data", m("m2"))],
            "a duplicate CTR",
        ),
        (
            "busybox",
            vec![
                format!("{}:/data/x", m("m1")),
                format!("{}://data/./x/", m("m2")),
            ],
            "a duplicate CTR once normalised",
        ),
        (
            "busybox",
            vec!["data/x:/data".into()],
            "HOST relative with a slash",
        ),
        ("busybox", vec!["./x:/data".into()], "HOST ./x"),
        (
            "busybox",
            vec!["x:/data".into()],
            "HOST a one-character name",
        ),
        ("busybox", vec!["-x:/data".into()], "HOST starting with -"),
        ("busybox", vec![".x:/data".into()], "HOST starting with ."),
        ("busybox", vec!["a b:/data".into()], "HOST with a space"),
        (
            "busybox",
            vec![format!("{}:/ok", m("good")), format!("{}:rel", m("m"))],
            "a good spec, then a bad one",
        ),
        (
            "busybox",
            vec!["good-name:/ok".into(), "x:/data".into()],
            "a good name, then a bad one",
        ),
        (
            "busybox",
            vec![format!("{f}:/etc")],
            "a file onto a directory of the image",
        ),
        (
            "busybox",
            vec![format!("{d}:/etc/passwd")],
            "a directory onto a file of the image",
        ),
        (
            "busybox",
            vec![format!("{}:/etc/passwd", m("m"))],
            "a missing host path (a directory to be) onto a file of the image",
        ),
        (
            "busybox",
            vec![format!("{}:/etc/passwd/x", m("m"))],
            "a path through a file of the image",
        ),
        (
            "busybox",
            vec![format!("{}:/ok", m("good")), format!("{d}:/bin/sh")],
            "a directory onto /bin/sh, a symlink to a file",
        ),
        (
            "links",
            vec![format!("{f}:/cfg")],
            "a file onto /cfg -> /etc",
        ),
        (
            "links",
            vec![format!("{}:/pw", m("m"))],
            "a missing HOST onto /pw -> etc/passwd",
        ),
        (
            "links",
            vec![format!("{}:/nowhere/x", m("m"))],
            "a missing HOST through /nowhere -> /no/such/dir, a link to nothing",
        ),
        (
            "links",
            vec!["named-m:/nowhere".into()],
            "a named volume onto /nowhere -> /no/such/dir, a link to nothing",
        ),
        (
            "links",
            vec![format!("{}:/fd/x", m("m"))],
            "a missing HOST through /fd -> /proc/self/fd/0, a magic link",
        ),
    ];
    let before = tree(host.path());
    for (image, specs, what) in cases {
        let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
        let out = run_with(&md, &specs, image, &["echo", "RAN"]);
        let shown = specs.join(" -v ");
        assert!(
            !out.stdout.contains("RAN"),
            "{what} (-v {shown}): the container ran: {out:#?}"
        );
        assert_eq!(
            out.code,
            Some(125),
            "{what} (-v {shown}) should be refused with 125, mydocker's own error: {out:#?}"
        );
        assert_eq!(
            out.stderr.trim().lines().count(),
            1,
            "{what} (-v {shown}) should be refused in one line: {out:#?}"
        );
        assert_eq!(
            tree(host.path()),
            before,
            "{what} (-v {shown}): the refused run made something in the host directory {}",
            host.path().display()
        );
        assert_eq!(
            volumes_left(&md),
            Vec::<String>::new(),
            "{what} (-v {shown}): the refused run made a named volume"
        );
        assert_eq!(
            md.containers_left(),
            Vec::<String>::new(),
            "{what} (-v {shown}): the refused run left a container"
        );
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "a file\n",
            "{what} (-v {shown}): the host file changed"
        );
    }
}

/// A mount point that a symlink leads into /proc (mydocker's own `/dev/fd
/// -> /proc/self/fd`, an image's `/procl -> /proc`) or back to the
/// container's `/` (`/dot -> .`) is refused: a volume there would cover
/// the kernel's files, which init and every program trust, or the whole
/// container. One line, exit 125, the command never runs, and the host
/// directory stays empty.
#[test]
fn volumes_never_cover_proc_or_the_root() {
    let md = Mydocker::new();
    let host = host_dir();
    let src = make_dir(host.path(), "src", &[]);
    md.add_image(
        "links",
        &ImageTar::new()
            .root_dir(0o755, 0, 0)
            .busybox()
            .dir("proc", 0o755)
            .symlink("procl", "/proc")
            .symlink("dot", ".")
            .symlink("up", "/bin/..")
            .into_bytes(),
    );
    let cases = [
        ("busybox", "/dev/fd", "/dev/fd -> /proc/self/fd"),
        ("links", "/procl", "/procl -> /proc"),
        ("links", "/procl/sys", "/procl/sys, through /procl -> /proc"),
        ("links", "/dot", "/dot -> ."),
        ("links", "/up", "/up -> /bin/.."),
    ];
    for (image, ctr, what) in cases {
        let out = run_with(&md, &[&spec(&src, ctr)], image, &["echo", "RAN"]);
        assert!(
            !out.stdout.contains("RAN"),
            "-v SRC:{ctr} ({what}): the container ran: {out:#?}"
        );
        assert_eq!(
            out.code,
            Some(125),
            "-v SRC:{ctr} ({what}) should be refused with 125: {out:#?}"
        );
        assert_eq!(
            out.stderr.trim().lines().count(),
            1,
            "-v SRC:{ctr} ({what}) should be refused in one line: {out:#?}"
        );
        assert_eq!(
            tree(&src),
            Vec::<String>::new(),
            "-v SRC:{ctr} ({what}): something was made in SRC"
        );
        assert_eq!(md.containers_left(), Vec::<String>::new());
    }
}
