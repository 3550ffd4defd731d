//! Stage 6: from a container to an image and back. `commit CONTAINER
//! IMAGE` writes what a running container sees of its files as a new image
//! (a tarball in the store), freezing the container only while it reads
//! them; `export` writes the same tarball elsewhere; `import` checks a
//! tarball and adds it to the store; `images` lists the store and `rmi`
//! removes from it.
//!
//! Until stage 7 a container lives only while its `run` does: the tests
//! start one with `run -i ... sh -c SCRIPT`, read its hostname (its short
//! ID), and send it command lines on its standard input while they commit
//! it from the outside, as a user would from a second terminal.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::io::{Read, Seek};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use mydocker_stage_tests::{
    cgroup_layout, descendants, eventually, gzip, kill_survivors, raw_entry, sha256_hex, signal,
    start_time, tar_archive, unique_token, walk, CgroupLayout, ImageTar, Mydocker, Outcome,
    Running, Spawned, LINE_TIMEOUT, TAR_END,
};

// ---------------------------------------------------------------------
// A running container the test talks to
// ---------------------------------------------------------------------

/// A container started with `run -i IMAGE sh -c ...`: it printed its
/// hostname (its short ID), ran a set-up script, and now runs each line the
/// test sends it ([`Ctr::sh`]).
struct Ctr {
    /// None once finished.
    running: Option<Running>,
    /// The short ID: the container's hostname, 12 hex digits.
    id: String,
}

impl Ctr {
    /// Start a container of `image` with `options` (before the image) that
    /// runs `setup` (`set -e`: it must succeed), then waits for commands.
    fn start(md: &Mydocker, image: &str, options: &[&str], setup: &str) -> Ctr {
        let script = format!(
            "cat /proc/sys/kernel/hostname; \
             if ( set -e; {setup}
             ) 2>&1; then echo set-up; else echo \"set-up-failed $?\"; fi; \
             while read -r line; do eval \"$line\" 2>&1; echo \"--done $?\"; done"
        );
        let mut running = md.start_in(image, options, &script);
        let id = match running
            .process()
            .next_line(LINE_TIMEOUT, "the container's hostname")
        {
            Some(id) => id,
            None => panic!(
                "the container of {image} ended before it printed its hostname: {:#?}",
                running.finish()
            ),
        };
        assert!(
            id.len() == 12 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "a container's hostname is its short ID, 12 hex digits; got `{id}`"
        );
        let mut output = String::new();
        loop {
            match running
                .process()
                .next_line(LINE_TIMEOUT, "the container's set-up")
            {
                Some(line) if line == "set-up" => break,
                Some(line) if line.starts_with("set-up-failed") => {
                    panic!("the test's set-up in the container failed ({line}):\n{setup}\nits output:\n{output}")
                }
                Some(line) => {
                    output.push_str(&line);
                    output.push('\n');
                }
                None => panic!(
                    "the container ended during its set-up: {:#?}",
                    running.finish()
                ),
            }
        }
        Ctr {
            running: Some(running),
            id,
        }
    }

    /// Run one line of shell in the container; its exit code and output
    /// (standard error included).
    fn try_sh(&mut self, line: &str) -> (i32, String) {
        assert!(!line.contains('\n'), "one line at a time: {line}");
        self.running().process().send_line(line);
        let awaited = format!("the running container to answer `{line}`");
        let mut output = String::new();
        loop {
            match self.running().process().next_line(LINE_TIMEOUT, &awaited) {
                Some(text) => match text.rfind("--done ") {
                    Some(at) => {
                        output.push_str(&text[..at]);
                        let code = text[at + 7..].trim().parse().unwrap_or(-1);
                        return (code, output);
                    }
                    None => {
                        output.push_str(&text);
                        output.push('\n');
                    }
                },
                None => panic!("the container ended while it ran `{line}`; output: {output}"),
            }
        }
    }

    /// Run one line of shell in the container, which must succeed; its
    /// output.
    fn sh(&mut self, line: &str) -> String {
        let (code, output) = self.try_sh(line);
        assert_eq!(
            code, 0,
            "`{line}` failed in the running container (exit {code}): {output}"
        );
        output
    }

    /// The container's cgroup in the freezer hierarchy (v1) or its one
    /// cgroup (v2): `<root>/mydocker/<full ID>`.
    fn cgroup(&self) -> PathBuf {
        let dir = mydocker_stage_tests::cgroup_dir(self.cgroups(), "freezer");
        let parent = dir.parent().and_then(|p| p.file_name());
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        assert!(
            parent == Some("mydocker".as_ref())
                && name.len() == 64
                && name.starts_with(&self.id),
            "from stage 6 every container has a cgroup mydocker/<full ID> (v1: in the freezer hierarchy), for commit to freeze it; container {} is in {} (its /proc/self/cgroup:\n{})",
            self.id,
            dir.display(),
            self.cgroups()
        );
        dir
    }

    /// The full ID (64 hex digits), the name of its cgroup.
    fn full_id(&self) -> String {
        self.cgroup()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// The freezer of its cgroup.
    fn freezer(&self) -> Freezer {
        let v1 = matches!(cgroup_layout(), CgroupLayout::V1(_));
        let file = if v1 { "freezer.state" } else { "cgroup.freeze" };
        Freezer {
            file: self.cgroup().join(file),
            v1,
        }
    }

    fn running(&mut self) -> &mut Running {
        self.running.as_mut().expect("a running container")
    }

    fn cgroups(&self) -> &str {
        &self.running.as_ref().expect("a running container").cgroups
    }

    /// Close its standard input: the shell ends, and the container.
    fn finish(mut self) -> Outcome {
        self.running.take().expect("finished once").finish()
    }
}

impl Drop for Ctr {
    /// A test that failed may leave the container frozen (by a binary that
    /// does not thaw it): thaw it, so that the kill that ends it works (a
    /// frozen process cannot die) and nothing stays behind.
    fn drop(&mut self) {
        let Some(running) = &self.running else {
            return;
        };
        let Some(dir) = mydocker_stage_tests::try_cgroup_dir(&running.cgroups, "freezer") else {
            return;
        };
        if dir.parent().and_then(|p| p.file_name()) != Some("mydocker".as_ref()) {
            return; // not a container's cgroup: never touch it
        }
        let (file, thawed) = match cgroup_layout() {
            CgroupLayout::V1(_) => (dir.join("freezer.state"), "THAWED"),
            CgroupLayout::V2(_) => (dir.join("cgroup.freeze"), "0"),
        };
        let _ = std::fs::write(file, thawed);
    }
}

/// The file that freezes a cgroup: v1 `freezer.state` (THAWED, FREEZING,
/// FROZEN), v2 `cgroup.freeze` (0 or 1).
struct Freezer {
    file: PathBuf,
    v1: bool,
}

impl Freezer {
    fn state(&self) -> String {
        std::fs::read_to_string(&self.file)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|e| format!("unreadable ({e})"))
    }

    fn frozen(&self) -> bool {
        self.state() == if self.v1 { "FROZEN" } else { "1" }
    }

    fn thawed(&self) -> bool {
        self.state() == if self.v1 { "THAWED" } else { "0" }
    }

    fn describe(&self) -> String {
        format!("{} reads {}", self.file.display(), self.state())
    }
}

// ---------------------------------------------------------------------
// Tarballs, images and the store
// ---------------------------------------------------------------------

/// One entry of a tarball, as read by the tar crate (PAX and GNU long
/// names applied).
#[derive(Debug, Clone)]
struct Entry {
    /// The type flag: `0` file, `1` hard link, `2` symlink, `3` character
    /// device, `4` block device, `5` directory, `6` FIFO.
    kind: char,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    link: Option<String>,
    device: Option<(u32, u32)>,
    data: Vec<u8>,
    /// The `SCHILY.xattr.NAME` PAX records: NAME and value.
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// A path of a tarball without `./` before it or `/` after it; `.` for
/// the root.
fn normalize(path: &str) -> String {
    let mut p = path;
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    let p = p.trim_start_matches('/').trim_end_matches('/');
    if p.is_empty() || p == "." {
        ".".to_string()
    } else {
        p.to_string()
    }
}

/// The entries of a tarball (plain or gzip), by normalized path.
fn read_tar(bytes: &[u8]) -> BTreeMap<String, Entry> {
    let mut archive = tar_archive(bytes);
    let mut entries = BTreeMap::new();
    for entry in archive.entries().expect("read the tarball") {
        let mut entry = entry.expect("read an entry of the tarball");
        let header = entry.header().clone();
        let kind = match header.entry_type().as_byte() {
            b'\0' | b'7' => '0',
            other => other as char,
        };
        let path = normalize(&entry.path().expect("an entry's path").to_string_lossy());
        let link = entry
            .link_name()
            .expect("an entry's link")
            .map(|l| l.to_string_lossy().into_owned());
        let device = if kind == '3' || kind == '4' {
            Some((
                header.device_major().ok().flatten().unwrap_or(0),
                header.device_minor().ok().flatten().unwrap_or(0),
            ))
        } else {
            None
        };
        let mut xattrs = BTreeMap::new();
        if let Ok(Some(records)) = entry.pax_extensions() {
            for record in records.flatten() {
                if let Ok(key) = record.key() {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        xattrs.insert(name.to_string(), record.value_bytes().to_vec());
                    }
                }
            }
        }
        let mut data = Vec::new();
        if kind == '0' {
            entry.read_to_end(&mut data).expect("an entry's data");
        }
        entries.insert(
            path,
            Entry {
                kind,
                mode: header.mode().unwrap_or(0) & 0o7777,
                uid: header.uid().unwrap_or(u64::MAX),
                gid: header.gid().unwrap_or(u64::MAX),
                size: header.size().unwrap_or(0),
                link,
                device,
                data,
                xattrs,
            },
        );
    }
    entries
}

/// Where the store keeps image `name`: `images/NAME.tar`, `images/x.tar`
/// for `x:latest`.
fn image_file(md: &Mydocker, name: &str) -> PathBuf {
    let name = name.strip_suffix(":latest").unwrap_or(name);
    md.images().join(format!("{name}.tar"))
}

/// The entries of image `name`'s tarball in the store.
fn image_entries(md: &Mydocker, name: &str) -> (Vec<u8>, BTreeMap<String, Entry>) {
    let file = image_file(md, name);
    let bytes = std::fs::read(&file)
        .unwrap_or_else(|e| panic!("image {name} should be the file {}: {e}", file.display()));
    let entries = read_tar(&bytes);
    (bytes, entries)
}

/// The names of the files in the image store, sorted.
fn store_files(md: &Mydocker) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(md.images())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Half-written images: files of the store whose name starts with `.`.
fn partials(md: &Mydocker) -> Vec<String> {
    store_files(md)
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// Every path under the state root (relative to it), for "nothing was
/// added or removed".
fn state_paths(md: &Mydocker) -> BTreeSet<PathBuf> {
    walk(md.root())
        .into_iter()
        .map(|(path, _)| path.strip_prefix(md.root()).unwrap().to_path_buf())
        .collect()
}

/// Whether `haystack` holds the bytes `needle`.
fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Commit the container as `name`, which must succeed and print the
/// image's ID; returns that ID's hex digits.
fn commit(md: &Mydocker, ctr: &Ctr, name: &str) -> String {
    let out = md.exec(&["commit", &ctr.id, name]);
    let printed = out.success().trim().to_string();
    let hex = printed.strip_prefix("sha256:").unwrap_or_else(|| {
        panic!(
            "`commit {} {name}` should print the new image's ID, sha256:HEX: {out:#?}",
            ctr.id
        )
    });
    assert!(
        hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "`commit` should print sha256: and 64 hex digits: {out:#?}"
    );
    hex.to_string()
}

/// Lines of `a` missing from `b`, and the other way round, for a message.
fn diff_lines(a: &str, b: &str) -> String {
    let left: BTreeSet<&str> = a.lines().collect();
    let right: BTreeSet<&str> = b.lines().collect();
    let mut text = String::new();
    for line in left.difference(&right) {
        text.push_str(&format!("- {line}\n"));
    }
    for line in right.difference(&left) {
        text.push_str(&format!("+ {line}\n"));
    }
    text
}

/// A shell line that lists, below `/`, the trees `trees` as a container
/// sees them: each path's type, mode and owner; each non-directory's size
/// and link count; each regular file's mtime and checksum; each symlink's
/// target and each device's numbers. Two listings are equal when the
/// files are, whatever their inode numbers.
fn probe(trees: &str) -> String {
    format!(
        "cd / && find {trees} -type d | sort | xargs -r stat -c 'D %n|%F|%a|%u:%g' && \
         find {trees} ! -type d | sort | xargs -r stat -c 'N %n|%F|%a|%u:%g|%s|%h' && \
         find {trees} -type f | sort | xargs -r stat -c 'T %n|%Y' && \
         find {trees} -type f | sort | xargs -r md5sum && \
         find {trees} -type l | sort | while read -r l; do echo \"L $l -> $(readlink \"$l\")\"; done && \
         find {trees} -type c | sort | xargs -r stat -c 'C %n|%t:%T'"
    )
}

/// Applets the tests' images need beyond [`mydocker_stage_tests::APPLETS`].
const MORE_APPLETS: &[&str] = &[
    "readlink", "mknod", "mkfifo", "dd", "head", "cut", "tr", "hostname",
];

/// The image most commit tests start from: busybox, `/tmp` (1777), the
/// kernel file systems' directories (with a file in `/dev`, which the
/// container's own /dev hides), and under `/data` files to keep, change
/// and delete, a hard link, a symlink, a setuid file and a setgid
/// directory. What the container deletes holds `token`.
fn base_image(token: &str) -> ImageTar {
    let deleted = format!("deleted {token}\n");
    ImageTar::new()
        .root_dir(0o755, 0, 0)
        .busybox()
        .applets(MORE_APPLETS)
        .dir("tmp", 0o1777)
        .dir("proc", 0o755)
        .dir("sys", 0o755)
        .dir("dev", 0o755)
        .file("dev/from-image", 0o644, b"the image's own file in /dev\n")
        .dir("data", 0o755)
        .file("data/keep", 0o644, b"kept\n")
        .file("data/change", 0o644, b"original\n")
        .file("data/delete", 0o644, deleted.as_bytes())
        .dir("data/gone", 0o755)
        .file("data/gone/inner", 0o644, deleted.as_bytes())
        .dir("data/gone/sub", 0o755)
        .file("data/gone/sub/deep", 0o644, deleted.as_bytes())
        .dir("data/again", 0o755)
        .file("data/again/old", 0o644, deleted.as_bytes())
        .file("data/again/also-old", 0o644, deleted.as_bytes())
        .file("data/hard1", 0o644, b"one file, two names\n")
        .hard_link("data/hard2", "data/hard1")
        .symlink("data/sym", "keep")
        .file("data/suid", 0o4755, b"#!/bin/sh\n")
        .dir("data/sgid", 0o2775)
}

// ---------------------------------------------------------------------
// commit: what goes into the image
// ---------------------------------------------------------------------

/// What a container changes, and deletes, in [`base_image`]: a file
/// deleted from a directory of the image, a directory deleted, and one
/// deleted and made again (an opaque directory in the overlay).
const CHANGES: &str = "echo changed > /data/change
    echo new > /data/new
    rm /data/delete
    rm -r /data/gone
    rm -r /data/again
    mkdir /data/again
    echo recreated > /data/again/new
    mkdir -p /made/deep
    echo deep > /made/deep/file
    echo in-tmp > /tmp/t";

/// What the tests read of those changes, in the container and in the image
/// made of it.
const SEE_CHANGES: &str =
    "cat /data/change /data/new /data/keep /data/again/new /made/deep/file /tmp/t; \
    echo ==; ls -A /data; echo ==; ls -A /data/again; echo ==; \
    for f in /data/delete /data/gone /data/gone/inner /data/again/old /data/again/also-old; do \
    test -e $f && echo \"still there: $f\"; done; true";

/// A commit of a running container, run as a new image, shows its changes
/// and new files; what it deleted is absent, also from a directory of the
/// image, and a directory deleted then made again holds only its new
/// files. The tarball carries no whiteout (no 0/0 character device, no
/// `.wh.` file) and no byte of the deleted files.
#[test]
fn a_commit_holds_the_containers_changes_and_none_of_its_deletions() {
    let md = Mydocker::new();
    let token = unique_token();
    md.add_image("base", &base_image(&token).into_bytes());
    let mut ctr = Ctr::start(&md, "base", &[], CHANGES);
    let seen = ctr.sh(SEE_CHANGES);
    assert_eq!(
        seen,
        "changed\nnew\nkept\nrecreated\ndeep\nin-tmp\n==\nagain\nchange\nhard1\nhard2\nkeep\nnew\nsgid\nsuid\nsym\n==\nnew\n==\n",
        "the container's own view of its changes (before the commit)"
    );
    commit(&md, &ctr, "snap");
    let (bytes, entries) = image_entries(&md, "snap");
    for (path, entry) in &entries {
        assert!(
            !(entry.kind == '3' && entry.device == Some((0, 0))),
            "the committed tarball holds {path} as a character device 0/0: an overlay whiteout copied as it is, where the file should be absent"
        );
        assert!(
            !path.split('/').any(|part| part.starts_with(".wh.")),
            "the committed tarball holds a whiteout file {path}"
        );
    }
    assert!(
        !holds(&bytes, &token),
        "the committed tarball holds the content of files the container deleted (data/delete, data/gone/..., data/again/old): entries {:?}",
        entries.keys().filter(|p| p.starts_with("data/")).collect::<Vec<_>>()
    );
    for gone in [
        "data/delete",
        "data/gone",
        "data/gone/inner",
        "data/again/old",
        "data/again/also-old",
    ] {
        assert!(
            !entries.contains_key(gone),
            "the container deleted /{gone}, but the committed tarball holds it: {:?}",
            entries[gone]
        );
    }
    let out = md.exec(&["run", "snap", "sh", "-c", SEE_CHANGES]);
    assert_eq!(
        out.success(),
        seen,
        "a container of the committed image should see the files as the committed container saw them (changed and new files there, deleted ones absent, the recreated directory holding only its new file)"
    );
    assert_eq!(
        ctr.sh("cat /data/change"),
        "changed\n",
        "the committed container should still run and answer after the commit"
    );
    ctr.finish().success();
}

/// What a container does to modes, owners, links and special files.
const MODES: &str = "echo made-suid > /data/made-suid && chmod 4755 /data/made-suid
    mkdir /data/made-sgid && chmod 2770 /data/made-sgid
    echo owned > /data/owned && chown 1000:2000 /data/owned
    echo dated > /data/dated && touch -d '2001-02-03 04:05:06' /data/dated
    echo linked > /data/made-hard1 && ln /data/made-hard1 /data/made-hard2
    ln -s /data/keep /data/made-abs-sym
    mkdir /data/dir && ln -s ../keep /data/dir/rel-sym
    mkfifo /data/fifo
    mknod /data/null c 1 3
    echo in-tmp > /tmp/t";

/// The committed image keeps what the container had: `/tmp` 1777, setuid
/// files and setgid directories (of the image and made by the container),
/// owners, mtimes, hard links as one inode, symlinks (absolute and
/// relative) as symlinks, a FIFO, a harmless character device. A listing
/// of the files made in the container and in a container of the new image
/// is the same.
#[test]
fn a_commit_keeps_modes_owners_links_and_special_files() {
    let md = Mydocker::new();
    let token = unique_token();
    md.add_image("base", &base_image(&token).into_bytes());
    let mut ctr = Ctr::start(&md, "base", &[], MODES);
    let listing = probe("bin data tmp");
    let before = ctr.sh(&listing);
    let dated = ctr.sh("stat -c %Y /data/dated");
    commit(&md, &ctr, "snap");
    let check = "stat -c '%n %a %u:%g' /tmp /data/suid /data/made-suid /data/sgid /data/made-sgid /data/owned; \
        echo ==; stat -c '%i %h' /data/hard1 /data/hard2; echo ==; stat -c '%i %h' /data/made-hard1 /data/made-hard2; \
        echo ==; for l in /data/sym /data/made-abs-sym /data/dir/rel-sym; do test -L $l && echo \"$l -> $(readlink $l)\"; done; \
        echo ==; test -p /data/fifo && echo fifo; stat -c '%F %t:%T' /data/null; stat -c %Y /data/dated";
    let out = md.exec(&["run", "snap", "sh", "-c", check]);
    let text = out.success();
    let parts: Vec<&str> = text.split("==\n").collect();
    assert_eq!(parts.len(), 5, "{out:#?}");
    assert_eq!(
        parts[0],
        "/tmp 1777 0:0\n/data/suid 4755 0:0\n/data/made-suid 4755 0:0\n/data/sgid 2775 0:0\n/data/made-sgid 2770 0:0\n/data/owned 644 1000:2000\n",
        "in the committed image: /tmp should stay 1777 (sticky), setuid files 4755 and setgid directories keep their bits, and the owner the container gave /data/owned (1000:2000)"
    );
    for (part, what) in [
        (parts[1], "of the image"),
        (parts[2], "made in the container"),
    ] {
        let lines: Vec<&str> = part.lines().collect();
        let inodes: BTreeSet<&str> = lines.iter().filter_map(|l| l.split(' ').next()).collect();
        assert!(
            lines.len() == 2 && inodes.len() == 1 && lines.iter().all(|l| l.ends_with(" 2")),
            "a hard link {what} should still be one inode with two names in the committed image (`stat -c '%i %h'` of both names): {part}"
        );
    }
    assert_eq!(
        parts[3],
        "/data/sym -> keep\n/data/made-abs-sym -> /data/keep\n/data/dir/rel-sym -> ../keep\n",
        "symlinks (of the image, and made in the container, absolute and relative) should stay symlinks with their targets"
    );
    assert_eq!(
        parts[4],
        format!("fifo\ncharacter special file 1:3\n{dated}"),
        "a FIFO stays a FIFO, /data/null (made with mknod c 1 3) stays a character device 1:3, and /data/dated keeps its mtime"
    );
    let out = md.exec(&["run", "snap", "sh", "-c", &listing]);
    let after = out.success();
    assert!(
        before == after,
        "every file of /bin, /data and /tmp in a container of the committed image should be as the committed container saw it (type, mode, owner, size, link count, file mtime and content, link target, device numbers); -: only in the committed container, +: only in the image:\n{}",
        diff_lines(&before, after)
    );
    let (_, entries) = image_entries(&md, "snap");
    let null = entries.get("data/null");
    assert!(
        null.is_some_and(|e| e.kind == '3' && e.device == Some((1, 3))),
        "the committed tarball should hold data/null as a character device 1:3: {null:?}"
    );
    let links: Vec<&Entry> = ["data/made-hard1", "data/made-hard2"]
        .iter()
        .filter_map(|p| entries.get(*p))
        .collect();
    assert!(
        links.len() == 2 && links.iter().filter(|e| e.kind == '1').count() == 1,
        "two names of one file should be one file and one hard link entry (type 1) in the tarball, not two copies: {links:#?}"
    );
    let link = links.iter().find(|e| e.kind == '1').unwrap();
    assert!(
        link.link.as_deref().is_some_and(
            |l| ["data/made-hard1", "data/made-hard2"].contains(&normalize(l).as_str())
        ),
        "the hard link entry should point at the other name: {link:?}"
    );
    let owned = entries.get("data/owned").map(|e| (e.uid, e.gid));
    assert_eq!(
        owned,
        Some((1000, 2000)),
        "data/owned should belong to 1000:2000 in the tarball"
    );
    assert_eq!(ctr.sh("cat /data/made-suid"), "made-suid\n");
    ctr.finish().success();
}

/// A directory of the test's own on the host, removed when the test ends.
fn host_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("mydocker-commit-")
        .tempdir()
        .expect("create a temporary directory")
}

/// Volumes are left out of the image (host directories, a named volume, a
/// host file, one nested in a directory the container made), and so is
/// what is mounted on /proc, /sys and /dev: the tarball holds not a byte
/// of what the container wrote there; the directories /proc, /sys and /dev
/// stay, with only what the image itself had in them; a mount point that
/// stays is empty.
#[test]
fn volumes_and_kernel_filesystems_are_left_out_of_a_commit() {
    let md = Mydocker::new();
    let token = unique_token();
    let secret = unique_token();
    md.add_image("base", &base_image(&token).into_bytes());
    let host = host_dir();
    let src = host.path().join("src");
    let src2 = host.path().join("src2");
    std::fs::create_dir(&src).unwrap();
    std::fs::create_dir(&src2).unwrap();
    std::fs::write(src.join("vol-file"), format!("{secret}\n")).unwrap();
    let conf = host.path().join("conf");
    std::fs::write(&conf, format!("{secret}\n")).unwrap();
    let spec = |host: &Path, ctr: &str| format!("{}:{ctr}", host.display());
    let mut ctr = Ctr::start(
        &md,
        "base",
        &[
            "-v",
            &spec(&src, "/vol"),
            "-v",
            "named:/named",
            "-v",
            &spec(&conf, "/data/file-vol"),
            "-v",
            &spec(&src2, "/made/sub/deep-vol"),
        ],
        &format!(
            "echo {secret} > /vol/written
            echo {secret} > /named/f
            echo {secret} > /made/sub/deep-vol/f
            echo {secret} >> /data/file-vol
            echo {secret} > /dev/in-dev
            echo {secret} > /dev/shm/in-shm
            echo layer > /data/in-layer
            echo layer > /made/in-layer"
        ),
    );
    commit(&md, &ctr, "snap");
    let (bytes, entries) = image_entries(&md, "snap");
    let leaked: Vec<&String> = entries
        .iter()
        .filter(|(_, e)| holds(&e.data, &secret))
        .map(|(p, _)| p)
        .collect();
    assert!(
        leaked.is_empty() && !holds(&bytes, &secret),
        "the committed tarball holds what the container wrote in its volumes or in /dev, which must be left out: {leaked:?}"
    );
    for dir in ["vol", "named", "made/sub/deep-vol", "proc", "sys"] {
        let below: Vec<&String> = entries
            .keys()
            .filter(|p| p.starts_with(&format!("{dir}/")))
            .collect();
        assert!(
            below.is_empty(),
            "the committed tarball holds what was mounted on /{dir}: {below:?}"
        );
    }
    for dir in ["vol", "named", "made/sub/deep-vol"] {
        if let Some(e) = entries.get(dir) {
            assert_eq!(
                e.kind, '5',
                "the mount point /{dir} may stay in the image, as an empty directory: {e:?}"
            );
        }
    }
    if let Some(e) = entries.get("data/file-vol") {
        assert!(
            e.kind == '0' && e.size == 0,
            "the mount point of a file volume, /data/file-vol, may stay, as an empty file: {e:?}"
        );
    }
    for dir in ["proc", "sys", "dev"] {
        assert!(
            entries.get(dir).is_some_and(|e| e.kind == '5'),
            "the directory /{dir} of the image should stay in the committed image (what is mounted on it is left out)"
        );
    }
    let dev: Vec<&String> = entries.keys().filter(|p| p.starts_with("dev/")).collect();
    assert_eq!(
        dev,
        ["dev/from-image"],
        "below /dev the committed image should hold what the image had there (dev/from-image), nothing of the container's /dev tmpfs"
    );
    assert_eq!(
        entries["dev/from-image"].data,
        b"the image's own file in /dev\n"
    );
    let out = md.exec(&[
        "run",
        "snap",
        "sh",
        "-c",
        "cat /data/in-layer /made/in-layer; for d in /vol /named /made/sub/deep-vol; do ls -A $d 2>/dev/null; done; cat /data/file-vol 2>/dev/null; true",
    ]);
    assert_eq!(
        out.success(),
        "layer\nlayer\n",
        "a container of the committed image should see the files the container wrote in its layer, and nothing of its volumes"
    );
    let mut host_files: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    host_files.sort();
    assert_eq!(
        host_files,
        ["vol-file", "written"],
        "the commit should leave the volume's host directory as it was"
    );
    assert_eq!(ctr.sh("cat /vol/written"), format!("{secret}\n"));
    ctr.finish().success();
}

/// `commit` prints the image's ID, `sha256:` and the SHA-256 of the plain
/// tarball it wrote at `images/NAME.tar`; it takes the short ID, the full
/// ID or a unique prefix. The container is not frozen before, nor after
/// (thawed by the time commit returns), answers between commits, and its
/// cgroup goes when it ends.
#[test]
fn commit_prints_the_image_id_and_the_container_goes_on() {
    let md = Mydocker::new();
    let mut ctr = Ctr::start(&md, "busybox", &[], "echo one > /f");
    let freezer = ctr.freezer();
    let cgroup = ctr.cgroup();
    assert!(
        freezer.thawed(),
        "a running container is not frozen: {}",
        freezer.describe()
    );
    let hex = commit(&md, &ctr, "one");
    assert!(
        freezer.thawed(),
        "once commit returned, the container should be thawed: {}",
        freezer.describe()
    );
    let file = image_file(&md, "one");
    assert_eq!(
        hex,
        sha256_hex(&file),
        "the ID commit prints is the SHA-256 of the tarball it wrote, {}",
        file.display()
    );
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        bytes.len() > 512 && &bytes[257..262] == b"ustar",
        "commit writes a plain tar (not gzip): {} starts with {:?}",
        file.display(),
        &bytes[..bytes.len().min(16)]
    );
    assert_eq!(ctr.sh("echo two > /f; cat /f"), "two\n");
    let full = ctr.full_id();
    let hex_two = commit_as(&md, &full, "two");
    assert_eq!(hex_two, sha256_hex(&image_file(&md, "two")));
    let prefix = &ctr.id[..7];
    commit_as(&md, prefix, "three");
    assert!(freezer.thawed(), "{}", freezer.describe());
    assert_eq!(ctr.sh("echo three > /f; cat /f"), "three\n");
    for (name, want) in [("one", "one\n"), ("two", "two\n"), ("three", "two\n")] {
        let out = md.exec(&["run", name, "cat", "/f"]);
        assert_eq!(
            out.success(),
            want,
            "image {name}: /f as the container had it when it was committed"
        );
    }
    ctr.finish().success();
    assert!(
        eventually(Duration::from_secs(3), || !cgroup.exists()),
        "the container's cgroup {} should be removed when it ends",
        cgroup.display()
    );
}

/// `commit CONTAINER NAME` with CONTAINER given as is; the hex of the ID
/// it prints.
fn commit_as(md: &Mydocker, container: &str, name: &str) -> String {
    let out = md.exec(&["commit", container, name]);
    let printed = out.success().trim().to_string();
    printed
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("`commit {container} {name}` should print sha256:HEX: {out:#?}"))
        .to_string()
}

/// Start `commit ID NAME` and watch the container's freezer until it reads
/// frozen. Ok(the commit, while the container is frozen), or Err(how the
/// commit ended) when it ended before the test saw the container frozen.
fn commit_until_frozen(
    md: &Mydocker,
    ctr: &Ctr,
    freezer: &Freezer,
    name: &str,
) -> Result<Spawned, Outcome> {
    let mut commit = md.spawn_command(md.command(&["commit", &ctr.id, name]));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if freezer.frozen() {
            return Ok(commit);
        }
        if !commit.is_running() {
            return Err(commit.wait());
        }
        assert!(
            Instant::now() < deadline,
            "commit ran 30 s without freezing the container: {}",
            freezer.describe()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The sizes of the big file that makes a commit slow enough to watch, in
/// MB: the second when the first was copied before the test saw it.
const BIG_FILE_MB: [u32; 2] = [200, 800];

/// While commit reads the container's files (a big file makes that take a
/// while) the container's cgroup is frozen (v1 freezer.state FROZEN, v2
/// cgroup.freeze 1); when commit returns it is thawed and answers.
#[test]
fn the_container_is_frozen_while_commit_reads_it() {
    let md = Mydocker::new();
    let mut ctr = Ctr::start(&md, "busybox", &[], "true");
    let freezer = ctr.freezer();
    for mb in BIG_FILE_MB {
        ctr.sh(&format!(
            "dd if=/dev/zero of=/big bs=1M count={mb} 2>/dev/null"
        ));
        let out = match commit_until_frozen(&md, &ctr, &freezer, "frozen") {
            Ok(running_commit) => running_commit.wait(),
            Err(out) => {
                out.success();
                eprintln!("the commit of a {mb} MB file ended before the test saw the container frozen; again with more");
                md.exec(&["rmi", "frozen"]).success();
                continue;
            }
        };
        out.success();
        assert!(
            freezer.thawed(),
            "once commit returned, the container should be thawed: {}",
            freezer.describe()
        );
        assert_eq!(ctr.sh("rm /big; echo thawed"), "thawed\n");
        assert!(image_file(&md, "frozen").is_file());
        ctr.finish().success();
        return;
    }
    panic!(
        "in commits of {BIG_FILE_MB:?} MB files the container was never seen frozen ({} never read frozen): commit must freeze the container (cgroup freezer) while it reads its files",
        freezer.file.display()
    );
}

/// A container that keeps writing a counter to /a then /z/b: every commit
/// holds a state the container was in (a = b, or a = b + 1 when frozen
/// between the two writes; a file being rewritten may be empty), never /a
/// and /z/b from different moments; and the counter goes on between
/// commits, so the container ran again after each. Big files in /z make
/// the copy take a while between the two counters, whatever the order of
/// the walk (sorted, or as readdir gives them), so that a copy of a
/// running container is caught.
#[test]
fn commits_of_a_busy_container_are_consistent() {
    let md = Mydocker::new();
    let ctr = Ctr::start(
        &md,
        "busybox",
        &[],
        "mkdir /z; for f in big1 big2 big3 big4; do dd if=/dev/zero of=/z/$f bs=1M count=8 2>/dev/null; done
         ( i=0; while :; do i=$((i+1)); echo $i > /a; echo $i > /z/b; done ) > /dev/null 2>&1 &
         while [ ! -s /z/b ]; do sleep 0.01; done",
    );
    let freezer = ctr.freezer();
    let mut counters = Vec::new();
    for n in 0..5 {
        let name = format!("busy{n}");
        commit(&md, &ctr, &name);
        assert!(freezer.thawed(), "{}", freezer.describe());
        let (_, entries) = image_entries(&md, &name);
        let read = |path: &str| -> Option<u64> {
            let entry = entries
                .get(path)
                .unwrap_or_else(|| panic!("image {name} lacks /{path}"));
            String::from_utf8_lossy(&entry.data).trim().parse().ok()
        };
        let (a, b) = (read("a"), read("z/b"));
        let consistent = match (a, b) {
            (Some(a), Some(b)) => a == b || a == b + 1,
            // One of them was being rewritten (truncated, not yet written).
            (None, Some(_)) | (Some(_), None) => true,
            (None, None) => false,
        };
        assert!(
            consistent,
            "commit {n}: /a = {a:?}, /z/b = {b:?}; the container writes the same counter to /a then /z/b, so a frozen container has a = b or a = b + 1: the files were read while it ran (freeze it for the whole copy)"
        );
        counters.push(b.or(a).unwrap_or(0));
        md.exec(&["rmi", &name]).success();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        counters.windows(2).all(|w| w[0] <= w[1]) && counters[0] < counters[4],
        "the counter should go on between commits (the container thawed after each): {counters:?}"
    );
    ctr.finish().success();
}

/// kill -9 of commit while the container is frozen (a big file makes the
/// copy slow): within seconds the container is thawed (a helper of
/// commit's outlives it for that) and answers; commit's helpers end; no
/// image of that name exists, not even half of one; the next commit of
/// that name works and removes the killed one's temporary file.
#[test]
fn a_commit_killed_with_sigkill_leaves_no_image_and_no_frozen_container() {
    let md = Mydocker::new();
    let mut ctr = Ctr::start(&md, "busybox", &[], "true");
    let freezer = ctr.freezer();
    let images_before = md.exec(&["images", "-q"]).success().to_string();
    let mut seen_frozen = false;
    for mb in BIG_FILE_MB {
        ctr.sh(&format!(
            "dd if=/dev/zero of=/big bs=1M count={mb} 2>/dev/null"
        ));
        let running_commit = match commit_until_frozen(&md, &ctr, &freezer, "killed") {
            Ok(running_commit) => {
                seen_frozen = true;
                running_commit
            }
            Err(out) => {
                out.success();
                eprintln!("the commit of a {mb} MB file ended before the test saw the container frozen; again with more");
                md.exec(&["rmi", "killed"]).success();
                continue;
            }
        };
        let helpers: Vec<(u32, Option<u64>)> = descendants(running_commit.id())
            .into_iter()
            .map(|p| (p, start_time(p)))
            .collect();
        signal(running_commit.id(), libc::SIGKILL);
        let out = running_commit.wait();
        if out.code.is_some() {
            out.success(); // it ended before the kill
            eprintln!("the commit of a {mb} MB file ended before the kill; again with more");
            md.exec(&["rmi", "killed"]).success();
            continue;
        }
        let thawed = eventually(Duration::from_secs(5), || freezer.thawed());
        let helpers_gone = eventually(Duration::from_secs(5), || {
            helpers
                .iter()
                .all(|(p, t)| !mydocker_stage_tests::alive(*p, *t))
        });
        let left: Vec<u32> = helpers
            .iter()
            .filter(|(p, t)| mydocker_stage_tests::alive(*p, *t))
            .map(|(p, _)| *p)
            .collect();
        assert!(kill_survivors(&helpers));
        assert!(
            thawed,
            "commit was killed with SIGKILL while the container was frozen; within 5 s the container should be thawed (by a helper that sees commit die): {}",
            freezer.describe()
        );
        assert!(
            helpers_gone,
            "the processes commit started should end once commit is dead and the container thawed; still alive: {left:?}"
        );
        let file = image_file(&md, "killed");
        assert!(
            !file.exists(),
            "a commit killed during the copy left the image file {} (written in place instead of a temporary file renamed at the end?)",
            file.display()
        );
        let out = md.exec(&["images"]);
        assert!(
            !out.success().contains("killed"),
            "`images` lists the image of a killed commit: {out:#?}"
        );
        assert_eq!(
            md.exec(&["images", "-q"]).success(),
            images_before,
            "a killed commit should add no image"
        );
        assert_eq!(
            ctr.sh("rm /big; echo alive"),
            "alive\n",
            "the container should run on after the commit was killed"
        );
        commit(&md, &ctr, "killed");
        assert!(
            partials(&md).is_empty(),
            "the next commit should remove the temporary file of the killed commit: {:?}",
            partials(&md)
        );
        ctr.finish().success();
        return;
    }
    assert!(
        seen_frozen,
        "in commits of {BIG_FILE_MB:?} MB files the container was never seen frozen ({} never read frozen): commit must freeze the container while it reads its files",
        freezer.file.display()
    );
    panic!(
        "could not kill commit while the container was frozen, with files of {BIG_FILE_MB:?} MB: each commit ended first"
    );
}

/// Committing over an existing image replaces it in one step: the old
/// tarball is never written to (a reader that opened it still reads the
/// old image whole), a container of the old image goes on with the old
/// files, and new containers get the new image.
#[test]
fn committing_over_an_existing_name_replaces_the_image_in_one_step() {
    let md = Mydocker::new();
    let mut ctr = Ctr::start(&md, "busybox", &[], "echo one > /v");
    let first = commit(&md, &ctr, "same");
    let file = image_file(&md, "same");
    let old_bytes = std::fs::read(&file).unwrap();
    let mut held = std::fs::File::open(&file).unwrap();
    let mut reader = Ctr::start(&md, "same", &[], "true");
    assert_eq!(reader.sh("cat /v"), "one\n");
    ctr.sh("echo two > /v");
    let second = commit(&md, &ctr, "same");
    assert_ne!(first, second, "two different images, two IDs");
    let mut now_held = Vec::new();
    held.rewind().unwrap();
    held.read_to_end(&mut now_held).unwrap();
    assert!(
        now_held == old_bytes,
        "the second commit of `same` changed the first one's tarball, which a reader still had open: write a temporary file and rename it over the old one"
    );
    assert_eq!(sha256_hex(&file), second);
    assert_eq!(
        md.exec(&["run", "same", "cat", "/v"]).success(),
        "two\n",
        "a new container of `same` should get the new image"
    );
    assert_eq!(
        reader.sh("cat /v"),
        "one\n",
        "a container of the old `same` should go on with the old files"
    );
    let listed = md.exec(&["images"]).success().to_string();
    assert_eq!(
        listed.lines().filter(|l| l.starts_with("same ")).count(),
        1,
        "`images` should list `same` once: {listed}"
    );
    assert!(partials(&md).is_empty(), "{:?}", partials(&md));
    reader.finish().success();
    ctr.finish().success();
}

/// The value of extended attribute `name` of `path` (not following a
/// symlink), if it has one.
fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    // SAFETY: both strings are NUL-terminated, and the buffer is as long as
    // said.
    let len = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if len < 0 {
        return None;
    }
    buf.truncate(len as usize);
    Some(buf)
}

/// `user.*` extended attributes of an image's files and directories (PAX
/// `SCHILY.xattr.` records) are there in its containers and go into a
/// commit, also on a file the container changed (copied up); the
/// unpacked copy of the committed image has them.
#[test]
fn extended_attributes_survive_a_commit() {
    let md = Mydocker::new();
    let token = unique_token();
    let value = format!("value {token}");
    let content = format!("xfile {token}\n");
    let image = ImageTar::new()
        .root_dir(0o755, 0, 0)
        .busybox()
        .dir("data", 0o755)
        .pax(&[("SCHILY.xattr.user.x", value.as_bytes())])
        .file("data/xfile", 0o644, content.as_bytes())
        .pax(&[("SCHILY.xattr.user.d", b"on a directory")])
        .dir("data/xdir", 0o755)
        .pax(&[("SCHILY.xattr.user.c", b"copied up")])
        .file("data/copied", 0o644, b"to be changed\n");
    md.add_image("xa", &image.into_bytes());
    let mut ctr = Ctr::start(
        &md,
        "xa",
        &[],
        "chmod 600 /data/copied; echo new > /data/xdir/new",
    );
    commit(&md, &ctr, "xb");
    let (_, entries) = image_entries(&md, "xb");
    for (path, name, want) in [
        ("data/xfile", "user.x", value.as_bytes()),
        ("data/xdir", "user.d", b"on a directory".as_slice()),
        ("data/copied", "user.c", b"copied up".as_slice()),
    ] {
        let entry = entries
            .get(path)
            .unwrap_or_else(|| panic!("the committed image lacks {path}"));
        assert_eq!(
            entry.xattrs.get(name).map(|v| String::from_utf8_lossy(v).into_owned()),
            Some(String::from_utf8_lossy(want).into_owned()),
            "/{path} had the extended attribute {name} in the container: the committed tarball should carry it as a PAX record SCHILY.xattr.{name} (its records: {:?})",
            entry.xattrs.keys().collect::<Vec<_>>()
        );
    }
    assert_eq!(entries["data/copied"].mode, 0o600);
    assert_eq!(ctr.sh("cat /data/xfile"), content);
    ctr.finish().success();
    let out = md.exec(&["run", "xb", "cat", "/data/xfile"]);
    assert_eq!(out.success(), content);
    let copies = md.copies_of(content.as_bytes());
    assert!(
        !copies.is_empty(),
        "after a run of xb, its unpacked copy should hold data/xfile under the state root"
    );
    for copy in copies {
        assert_eq!(
            xattr(&copy, "user.x"),
            Some(value.clone().into_bytes()),
            "the unpacked copy {} should have the extended attribute user.x of the image",
            copy.display()
        );
    }
}

/// A container holding what the image format may not (a relative symlink
/// that climbs above `/`, a block device) cannot be committed: one line
/// naming the path, no image, no temporary file, the container thawed and
/// running; once the file is gone, the commit works.
#[test]
fn a_container_the_image_format_cannot_hold_is_refused() {
    let md = Mydocker::new();
    let mut ctr = Ctr::start(&md, "busybox", &[], "echo kept > /kept");
    let freezer = ctr.freezer();
    for (name, make) in [
        ("climbing-link", "ln -s ../../etc/passwd /climbing-link"),
        ("disk-node", "mknod /disk-node b 8 0"),
    ] {
        let (code, output) = ctr.try_sh(make);
        assert_eq!(
            code, 0,
            "the test could not make /{name} in the container (`{make}`): {output}"
        );
        let out = md.exec(&["commit", &ctr.id, "refused"]);
        assert_eq!(
            out.code,
            Some(125),
            "a container with /{name} (`{make}`) should not be committed: its image would be refused: {out:#?}"
        );
        assert!(
            out.one_line_failure().contains(name),
            "the refusal should name the path /{name}: {out:#?}"
        );
        assert!(
            !image_file(&md, "refused").exists(),
            "a refused commit left an image"
        );
        assert!(partials(&md).is_empty(), "{:?}", partials(&md));
        assert!(
            freezer.thawed(),
            "after a refused commit the container should be thawed: {}",
            freezer.describe()
        );
        ctr.sh(&format!("rm /{name}"));
    }
    commit(&md, &ctr, "accepted");
    assert_eq!(
        md.exec(&["run", "accepted", "cat", "/kept"]).success(),
        "kept\n"
    );
    ctr.finish().success();
}

/// CONTAINER is the full ID or a unique prefix of a running container's:
/// a prefix that several share is refused with the matching short IDs, one
/// no container has (or an ended container's ID, or a non-hex one) with
/// `no such container`; none of them makes an image, and `export` refuses
/// the same way without making its file.
#[test]
fn commit_finds_a_running_container_by_a_unique_prefix_only() {
    let md = Mydocker::new();
    let mut ctrs: Vec<Ctr> = Vec::new();
    // Two of 17 containers share their first hex digit, at the latest.
    let (a, b) = loop {
        let ctr = Ctr::start(&md, "busybox", &[], "true");
        let first = ctr.id.as_bytes()[0];
        let twin = ctrs.iter().position(|c| c.id.as_bytes()[0] == first);
        ctrs.push(ctr);
        if let Some(twin) = twin {
            break (twin, ctrs.len() - 1);
        }
        assert!(ctrs.len() <= 17, "17 hex IDs, no two starting alike?");
    };
    let prefix = &ctrs[a].id[..1];
    let out = md.exec(&["commit", prefix, "ambiguous"]);
    assert_eq!(out.code, Some(125), "{out:#?}");
    let message = out.one_line_failure();
    assert!(
        message.contains(&ctrs[a].id) && message.contains(&ctrs[b].id),
        "`commit {prefix} ...` matches containers {} and {}: the refusal should list their short IDs: {out:#?}",
        ctrs[a].id,
        ctrs[b].id
    );
    // The shortest prefix of the last container that no other shares.
    let last = &ctrs[ctrs.len() - 1];
    let unique = (1..=12)
        .map(|n| &last.id[..n])
        .find(|p| ctrs.iter().filter(|c| c.id.starts_with(p)).count() == 1)
        .unwrap()
        .to_string();
    commit_as(&md, &unique, "by-prefix");
    commit_as(&md, &ctrs[0].full_id(), "by-full-id");
    let missing = (0u64..)
        .map(|n| format!("{n:012x}"))
        .find(|id| !ctrs.iter().any(|c| c.id.starts_with(id.as_str())))
        .unwrap();
    let ended = ctrs.remove(0);
    let ended_id = ended.id.clone();
    ended.finish().success();
    let out_file = host_dir();
    let exported = out_file.path().join("exported.tar");
    for (container, what) in [
        (missing.as_str(), "no container has that ID"),
        (ended_id.as_str(), "that container ended"),
    ] {
        let out = md.exec(&["commit", container, "nothing"]);
        assert_eq!(out.code, Some(125), "{what}: {out:#?}");
        assert!(
            out.one_line_failure()
                .contains(&format!("no such container: {container}")),
            "`commit {container}`: {what}; the message should be `no such container: {container}`: {out:#?}"
        );
        let out = md.exec(&["export", container, "-o", exported.to_str().unwrap()]);
        assert_eq!(out.code, Some(125), "export: {what}: {out:#?}");
        out.one_line_failure();
        assert!(
            !exported.exists(),
            "`export {container} -o FILE` for no container made FILE"
        );
    }
    for bad in ["zzzz", "", "../x"] {
        let out = md.exec(&["commit", bad, "nothing"]);
        assert_eq!(
            out.code,
            Some(125),
            "`commit '{bad}' ...` names no container: {out:#?}"
        );
        out.one_line_failure();
    }
    let mut names = store_files(&md);
    names.retain(|n| n != "busybox.tar");
    assert_eq!(
        names,
        ["by-full-id.tar", "by-prefix.tar"],
        "only the two commits of a container found should have made images"
    );
    assert_eq!(
        std::fs::read_dir(out_file.path()).unwrap().count(),
        0,
        "export made files for no container"
    );
    for ctr in ctrs {
        ctr.finish().success();
    }
}

// ---------------------------------------------------------------------
// Image names
// ---------------------------------------------------------------------

/// A small image with a file `/hello` holding `text`, as a tarball on the
/// host.
fn small_tarball(dir: &Path, file: &str, text: &str) -> PathBuf {
    let path = dir.join(file);
    let bytes = ImageTar::new()
        .root_dir(0o755, 0, 0)
        .file("hello", 0o644, text.as_bytes())
        .into_bytes();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Names Docker's rules refuse, and the ones that could climb out of the
/// store.
fn bad_names() -> Vec<String> {
    let mut names: Vec<String> = [
        "Upper",
        "upPer:v1",
        "../x",
        "a/b",
        "library/x",
        "x/",
        "x:",
        ":v1",
        "x:y:z",
        "a b",
        "",
        ".x",
        "x.",
        "x-",
        "_x",
        "a..b",
        "a___b",
        "a_.b",
        "x:.v",
        "x:-v",
        "..",
        ".",
        "x:v/1",
        "x:v 1",
        "x:../y",
        "é",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    names.push("a".repeat(129));
    names.push(format!("t:{}", "v".repeat(121)));
    names
}

/// Docker's rules for names: lowercase groups joined by `.`, one or two
/// `_` or dashes, an optional tag; `x` is `x:latest`. Bad names are
/// refused in one line (exit 125) by import, commit and rmi, making or
/// removing nothing, and the container stays thawed.
#[test]
fn bad_image_names_are_refused_and_make_nothing() {
    let md = Mydocker::new();
    let dir = host_dir();
    let tarball = small_tarball(dir.path(), "small.tar", "hello\n");
    let file = tarball.to_str().unwrap();
    let long_tag = format!("t:{}", "v".repeat(120));
    let long_name = "a".repeat(128);
    for good in [
        "my-app",
        "my_app.v2",
        "a__b",
        "a---b",
        "x:V1.0_rc-1",
        "0",
        "y:latest",
        long_name.as_str(),
        long_tag.as_str(),
    ] {
        let out = md.exec(&["import", file, good]);
        assert!(
            out.code == Some(0),
            "`import FILE {good}`: a good name, refused: {out:#?}"
        );
        let stored = image_file(&md, good);
        assert!(
            stored.is_file(),
            "image {good} should be stored as {}",
            stored.display()
        );
    }
    let out = md.exec(&["images"]);
    let rows = table(out.success());
    let pairs: Vec<(&str, &str)> = rows[1..]
        .iter()
        .map(|r| (r[0].as_str(), r.get(1).map(String::as_str).unwrap_or("")))
        .collect();
    assert!(
        pairs.contains(&("y", "latest"))
            && pairs.contains(&("x", "V1.0_rc-1"))
            && pairs.contains(&("t", &"v".repeat(120)))
            && !pairs.iter().any(|(_, tag)| tag.contains(':')),
        "`images` should list y:latest as y with the tag latest, and x:V1.0_rc-1 as x with its tag: {out:#?}"
    );
    let mut ctr = Ctr::start(&md, "busybox", &[], "true");
    let freezer = ctr.freezer();
    let stored_with_busybox = store_files(&md);
    for bad in bad_names() {
        let out = md.exec(&["import", file, &bad]);
        assert_eq!(
            out.code,
            Some(125),
            "`import FILE '{bad}'`: not an image name: {out:#?}"
        );
        out.one_line_failure();
        if ["Upper", "../x", "a/b", "x:", ".x", "x:y:z", ""].contains(&bad.as_str()) {
            let out = md.exec(&["commit", &ctr.id, &bad]);
            assert_eq!(
                out.code,
                Some(125),
                "`commit ID '{bad}'`: not an image name: {out:#?}"
            );
            out.one_line_failure();
            assert!(
                freezer.thawed(),
                "after commit refused '{bad}': {}",
                freezer.describe()
            );
        }
        assert_eq!(
            store_files(&md),
            stored_with_busybox,
            "the bad name '{bad}' changed the image store"
        );
    }
    // rmi with a name that climbs must not remove a file outside the store.
    let decoy = md.root().join("decoy.tar");
    std::fs::write(&decoy, "not an image").unwrap();
    for bad in ["../decoy", "../images/../decoy"] {
        let out = md.exec(&["rmi", bad]);
        assert_eq!(out.code, Some(125), "`rmi {bad}`: {out:#?}");
        out.one_line_failure();
        assert!(decoy.exists(), "`rmi {bad}` removed {}", decoy.display());
    }
    std::fs::remove_file(&decoy).unwrap();
    assert_eq!(ctr.sh("echo ok"), "ok\n");
    ctr.finish().success();
}

// ---------------------------------------------------------------------
// images
// ---------------------------------------------------------------------

/// Docker's sizes: decimal units, 3 significant digits (`%.3g`).
fn docker_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    // 3 significant digits, rounded before the unit is chosen: 999999 is 1MB.
    let round3 = |value: f64| {
        if value < 1.0 {
            return value.round();
        }
        let scale = 10f64.powi(2 - value.log10().floor() as i32);
        (value * scale).round() / scale
    };
    let mut value = bytes as f64;
    let mut unit = 0;
    while round3(value) >= 1000.0 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let value = round3(value);
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    let mut text = format!("{value:.decimals$}");
    if text.contains('.') {
        text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{text}{}", units[unit])
}

/// The cells of `images`' output, line by line: split where three spaces
/// or more separate them. Also checks that each column starts at the same
/// place on every line.
fn table(output: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut starts: Option<Vec<usize>> = None;
    for line in output.lines() {
        let mut cells = Vec::new();
        let mut at = Vec::new();
        let mut rest = line;
        let mut offset = 0;
        loop {
            let trimmed = rest.trim_start();
            offset += rest.len() - trimmed.len();
            if trimmed.is_empty() {
                break;
            }
            let end = trimmed.find("   ").unwrap_or(trimmed.len());
            cells.push(trimmed[..end].trim_end().to_string());
            at.push(offset);
            offset += end;
            rest = &trimmed[end..];
        }
        match &starts {
            None => starts = Some(at),
            Some(first) => assert!(
                first.len() == at.len() && first.iter().zip(&at).all(|(a, b)| a == b),
                "`images`: the columns should line up under the header's (cells at {at:?}, header's at {first:?}):\n{output}"
            ),
        }
        rows.push(cells);
    }
    rows
}

const HEADER: [&str; 5] = ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"];

/// Set a file's modification time `ago` before now.
fn age(path: &Path, ago: Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - ago).unwrap();
}

/// `images` prints Docker's table: the header alone for an empty store,
/// then one row per image sorted by name then tag, with the first 12 hex
/// digits of the tarball's SHA-256, its age in Docker's words, and its size
/// on disk (compressed for a gzip tarball) in Docker's units; `-q` prints
/// the IDs in the same order.
#[test]
fn images_lists_the_store_sorted_with_ids_ages_and_sizes() {
    let md = Mydocker::new();
    let out = md.exec(&["images"]);
    let rows = table(out.success());
    assert_eq!(
        rows,
        [HEADER.to_vec()],
        "`images` with an empty store: the header only"
    );
    assert_eq!(md.exec(&["images", "-q"]).success(), "");
    let dir = host_dir();
    // Sorted by name, then tag: `alpha-x` after every `alpha`, and the tag
    // `a1` before `latest`, whatever the order of the file names.
    let names = [
        "zeta", "alpha:v2", "alpha", "alpha-x", "alpha:a1", "mid", "gz",
    ];
    for name in names {
        let tarball = small_tarball(dir.path(), "t.tar", &format!("{name} {}\n", unique_token()));
        let tarball = if name == "gz" {
            let bytes = gzip(&std::fs::read(&tarball).unwrap());
            std::fs::write(&tarball, bytes).unwrap();
            tarball
        } else {
            tarball
        };
        md.exec(&["import", tarball.to_str().unwrap(), name])
            .success();
    }
    md.run(&[], &["true"]).success(); // busybox
    let order = [
        ("alpha", "a1", "alpha:a1"),
        ("alpha", "latest", "alpha"),
        ("alpha", "v2", "alpha:v2"),
        ("alpha-x", "latest", "alpha-x"),
        ("busybox", "latest", "busybox"),
        ("gz", "latest", "gz"),
        ("mid", "latest", "mid"),
        ("zeta", "latest", "zeta"),
    ];
    let check = |ages: &[(&str, &str)]| {
        let out = md.exec(&["images"]);
        let rows = table(out.success());
        assert_eq!(rows[0], HEADER, "the header of `images`: {out:#?}");
        let listed: Vec<(String, String)> = rows[1..]
            .iter()
            .map(|r| (r[0].clone(), r.get(1).cloned().unwrap_or_default()))
            .collect();
        let want: Vec<(String, String)> = order
            .iter()
            .map(|(r, t, _)| (r.to_string(), t.to_string()))
            .collect();
        assert_eq!(
            listed, want,
            "`images` lists every image, sorted by name then tag: {out:#?}"
        );
        let mut ids = String::new();
        for (row, (_, _, name)) in rows[1..].iter().zip(order) {
            let file = image_file(&md, name);
            let id = sha256_hex(&file)[..12].to_string();
            let size = docker_size(std::fs::metadata(&file).unwrap().len());
            assert_eq!(row.len(), 5, "a row of five cells: {row:?}");
            assert_eq!(
                row[2], id,
                "IMAGE ID of {name}: the first 12 hex digits of its tarball's SHA-256"
            );
            assert_eq!(
                row[4], size,
                "SIZE of {name}: its tarball's size on disk ({} bytes) in Docker's units, 3 significant digits",
                std::fs::metadata(&file).unwrap().len()
            );
            let created = &row[3];
            match ages.iter().find(|(n, _)| *n == name) {
                Some((_, want)) => assert_eq!(
                    created, want,
                    "CREATED of {name}, whose tarball's mtime the test set back"
                ),
                None => {
                    let seconds = created
                        .strip_suffix(" seconds ago")
                        .and_then(|n| n.parse::<u64>().ok());
                    assert!(
                        created == "Less than a second ago"
                            || created == "1 second ago"
                            || created == "About a minute ago"
                            || seconds.is_some_and(|n| n < 60),
                        "CREATED of {name}, made just now, in Docker's words (`Less than a second ago`, `N seconds ago`): {created}"
                    );
                }
            }
            ids.push_str(&id);
            ids.push('\n');
        }
        assert_eq!(
            md.exec(&["images", "-q"]).success(),
            ids,
            "`images -q`: the IDs, one per line, in the same order"
        );
    };
    check(&[]);
    age(&image_file(&md, "zeta"), Duration::from_secs(130));
    age(&image_file(&md, "mid"), Duration::from_secs(3 * 3600 + 600));
    age(
        &image_file(&md, "alpha:v2"),
        Duration::from_secs(5 * 86400 + 3 * 3600),
    );
    check(&[
        ("zeta", "2 minutes ago"),
        ("mid", "3 hours ago"),
        ("alpha:v2", "5 days ago"),
    ]);
    // --root picks another store, as for run.
    let ids = md.exec(&["images", "-q"]).success().to_string();
    let other = host_dir();
    let other_root = other.path().join("root");
    let other_root = other_root.to_str().unwrap();
    let tarball = small_tarball(dir.path(), "other.tar", "other\n");
    md.exec(&[
        "--root",
        other_root,
        "import",
        tarball.to_str().unwrap(),
        "elsewhere",
    ])
    .success();
    let out = md.exec(&["--root", other_root, "images"]);
    let rows = table(out.success());
    assert!(
        rows.len() == 2 && rows[1][0] == "elsewhere",
        "`--root DIR images` lists DIR's images: {out:#?}"
    );
    assert_eq!(
        md.exec(&["images", "-q"]).success(),
        ids,
        "an image imported with another --root is not in this store"
    );
    md.exec(&["--root", other_root, "rmi", "elsewhere"])
        .success();
    assert_eq!(
        md.exec(&["--root", other_root, "images", "-q"]).success(),
        ""
    );
}

// ---------------------------------------------------------------------
// rmi
// ---------------------------------------------------------------------

/// A busybox image whose `/marker` holds `token`.
fn marked_image(token: &str) -> Vec<u8> {
    ImageTar::new()
        .root_dir(0o755, 0, 0)
        .busybox()
        .file("marker", 0o644, format!("{token}\n").as_bytes())
        .into_bytes()
}

/// `rmi NAME` prints `Untagged: NAME:TAG`, and `Deleted: sha256:HEX` when
/// the unpacked copy goes too; the tarball and the copy are gone, and `run`
/// of the name then fails in one line that lists the images left. Two
/// names of the same content share one copy: removing one keeps it.
#[test]
fn rmi_removes_the_image_and_its_copy_and_run_then_lists_the_others() {
    let md = Mydocker::new();
    md.run(&[], &["true"]).success(); // busybox
    let token = unique_token();
    let marker = format!("{token}\n");
    md.add_image("gone", &marked_image(&token));
    md.add_image("other", &marked_image(&unique_token()));
    let hex = sha256_hex(&image_file(&md, "gone"));
    assert_eq!(
        md.exec(&["run", "gone", "cat", "/marker"]).success(),
        marker
    );
    assert_eq!(md.copies_of(marker.as_bytes()).len(), 1);
    let out = md.exec(&["rmi", "gone"]);
    assert_eq!(
        out.success(),
        format!("Untagged: gone:latest\nDeleted: sha256:{hex}\n"),
        "`rmi gone` of an image that was run: its name untagged, its unpacked copy deleted"
    );
    assert!(!image_file(&md, "gone").exists());
    assert_eq!(
        md.copies_of(marker.as_bytes()),
        Vec::<PathBuf>::new(),
        "rmi should remove the image's unpacked copy"
    );
    let out = md.exec(&["run", "gone", "true"]);
    let message = out.one_line_failure();
    assert!(
        message.contains("gone") && message.contains("other") && message.contains("busybox"),
        "`run gone` after `rmi gone` should fail in one line listing the images (busybox, other): {out:#?}"
    );
    let listed = md.exec(&["images"]).success().to_string();
    assert!(!listed.contains("gone"), "`images` after rmi: {listed}");

    // Two names, one content: one copy, kept while a name has it.
    let twin_token = unique_token();
    let twin_marker = format!("{twin_token}\n");
    let twin = marked_image(&twin_token);
    md.add_image("twin-a", &twin);
    md.add_image("twin-b", &twin);
    let twin_hex = sha256_hex(&image_file(&md, "twin-a"));
    md.exec(&["run", "twin-a", "true"]).success();
    md.exec(&["run", "twin-b", "true"]).success();
    let copies = md.copies_of(twin_marker.as_bytes());
    assert_eq!(copies.len(), 1, "{copies:?}");
    let inode = std::fs::metadata(&copies[0]).unwrap().ino();
    assert_eq!(
        md.exec(&["rmi", "twin-a"]).success(),
        "Untagged: twin-a:latest\n",
        "twin-b has the same content: the copy stays, so nothing is deleted"
    );
    assert_eq!(
        md.copies_of(twin_marker.as_bytes())
            .first()
            .map(|p| std::fs::metadata(p).unwrap().ino()),
        Some(inode),
        "the copy that twin-b uses should stay"
    );
    assert_eq!(
        md.exec(&["run", "twin-b", "cat", "/marker"]).success(),
        twin_marker
    );
    assert_eq!(
        md.exec(&["rmi", "twin-b"]).success(),
        format!("Untagged: twin-b:latest\nDeleted: sha256:{twin_hex}\n")
    );
    assert!(md.copies_of(twin_marker.as_bytes()).is_empty());
}

/// rmi is refused while a running container uses the image (one line
/// naming its short ID); the image stays and new containers of it still
/// run; once the container ended, rmi works.
#[test]
fn rmi_is_refused_while_a_running_container_uses_the_image() {
    let md = Mydocker::new();
    let token = unique_token();
    md.add_image("inuse", &marked_image(&token));
    let mut ctr = Ctr::start(&md, "inuse", &[], "true");
    let ids = md.exec(&["images", "-q"]).success().to_string();
    let out = md.exec(&["rmi", "inuse"]);
    assert_eq!(
        out.code,
        Some(125),
        "`rmi inuse` while container {} runs it: {out:#?}",
        ctr.id
    );
    assert!(
        out.one_line_failure().contains(&ctr.id),
        "the refusal should name the running container's short ID {}: {out:#?}",
        ctr.id
    );
    assert!(
        !out.stdout.contains("Untagged"),
        "a refused rmi untags nothing: {out:#?}"
    );
    assert!(image_file(&md, "inuse").is_file());
    assert_eq!(md.exec(&["images", "-q"]).success(), ids);
    assert_eq!(
        md.exec(&["run", "inuse", "cat", "/marker"]).success(),
        format!("{token}\n"),
        "the image should still run after the refused rmi"
    );
    assert_eq!(ctr.sh("cat /marker"), format!("{token}\n"));
    ctr.finish().success();
    assert_eq!(
        md.exec(&["rmi", "inuse"]).success().lines().next(),
        Some("Untagged: inuse:latest"),
        "once its container ended, the image can be removed"
    );
    assert!(!image_file(&md, "inuse").exists());
}

/// The built-in busybox image can be removed like any other; the next
/// `run busybox` builds it again.
#[test]
fn rmi_busybox_then_run_builds_it_again() {
    let md = Mydocker::new();
    md.run(&[], &["true"]).success();
    let out = md.exec(&["rmi", "busybox"]);
    assert_eq!(
        out.success().lines().next(),
        Some("Untagged: busybox:latest"),
        "{out:#?}"
    );
    assert!(!image_file(&md, "busybox").exists());
    assert!(!md.exec(&["images"]).success().contains("busybox"));
    assert_eq!(
        md.run(&[], &["echo", "again"]).success(),
        "again\n",
        "`run busybox` after `rmi busybox` builds the image again"
    );
    assert!(image_file(&md, "busybox").is_file());
}

/// `rmi a no-such b`: `no such image: no-such` in one line, exit 125, and
/// a and b are removed all the same.
#[test]
fn rmi_of_an_unknown_name_fails_and_removes_the_others() {
    let md = Mydocker::new();
    md.add_image("a", &marked_image(&unique_token()));
    md.add_image("b", &marked_image(&unique_token()));
    let out = md.exec(&["rmi", "a", "no-such", "b"]);
    assert_eq!(out.code, Some(125), "{out:#?}");
    assert!(
        out.one_line_failure().contains("no such image: no-such"),
        "{out:#?}"
    );
    assert!(
        out.stdout.contains("Untagged: a:latest") && out.stdout.contains("Untagged: b:latest"),
        "the known images are removed despite the unknown one: {out:#?}"
    );
    assert!(!image_file(&md, "a").exists() && !image_file(&md, "b").exists());
    let out = md.exec(&["rmi", "no-such"]);
    assert_eq!(out.code, Some(125));
    out.one_line_failure();
}

// ---------------------------------------------------------------------
// import and export
// ---------------------------------------------------------------------

/// A root file system in a directory of the host, as a user would tar it:
/// busybox, `/hello`, `/tmp` 1777, a setuid file, a file owned by
/// 1234:5678, a hard link, a relative symlink, a path longer than the 100
/// bytes of a tar header's name, a file dated 2001.
fn host_rootfs(dir: &Path, token: &str) -> String {
    use std::os::unix::fs::{chown, symlink};
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("the host's static busybox");
    for applet in ["sh", "cat", "stat", "readlink", "ls", "test"] {
        symlink("busybox", bin.join(applet)).unwrap();
    }
    std::fs::write(dir.join("hello"), format!("hello {token}\n")).unwrap();
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("suid"), "suid\n").unwrap();
    std::fs::set_permissions(data.join("suid"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(data.join("owned"), "owned\n").unwrap();
    chown(data.join("owned"), Some(1234), Some(5678)).unwrap();
    std::fs::write(data.join("hard1"), "hard\n").unwrap();
    std::fs::hard_link(data.join("hard1"), data.join("hard2")).unwrap();
    symlink("../hello", data.join("sym")).unwrap();
    let long = format!("data/{}/{}", "l".repeat(60), "m".repeat(60));
    std::fs::create_dir_all(dir.join(&long).parent().unwrap()).unwrap();
    std::fs::write(dir.join(&long), format!("long {token}\n")).unwrap();
    let dated = std::fs::File::create(data.join("dated")).unwrap();
    dated
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(981_173_106))
        .unwrap();
    long
}

/// What a container of an image of [`host_rootfs`] shows, and what it
/// should.
fn check_rootfs_image(md: &Mydocker, image: &str, token: &str, long: &str, made_by: &str) {
    let script = format!(
        "cat /hello /{long}; stat -c '%n %a' /tmp /data/suid; stat -c '%u:%g' /data/owned; \
         stat -c %i /data/hard1 /data/hard2; readlink /data/sym; stat -c %Y /data/dated"
    );
    let out = md.exec(&["run", image, "sh", "-c", &script]);
    let text = out.success();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() == 9 && lines[5] == lines[6],
        "the hard link of the tarball made by {made_by} should be one inode in the image (lines 6 and 7): {out:#?}"
    );
    assert_eq!(
        [lines[0], lines[1], lines[2], lines[3], lines[4], lines[7], lines[8]],
        [
            &format!("hello {token}"),
            &format!("long {token}"),
            "/tmp 1777",
            "/data/suid 4755",
            "1234:5678",
            "../hello",
            "981173106",
        ],
        "the image imported from a tarball made by {made_by}: files (one with a path over 100 bytes), /tmp 1777, setuid, owner, symlink, mtime"
    );
}

/// The import of a file prints `sha256:` and the SHA-256 of its bytes, and
/// stores them as given.
fn import_file(md: &Mydocker, file: &Path, name: &str) {
    let out = md.exec(&["import", file.to_str().unwrap(), name]);
    assert_eq!(
        out.success().trim(),
        format!("sha256:{}", sha256_hex(file)),
        "`import FILE {name}` prints sha256: and the SHA-256 of FILE (as sha256sum FILE)"
    );
    assert!(
        std::fs::read(image_file(md, name)).unwrap() == std::fs::read(file).unwrap(),
        "the imported tarball should be stored as given, in {}",
        image_file(md, name).display()
    );
}

/// `import` of a gzip tarball made by GNU tar (`tar -czf`, `./` names, GNU
/// long names), then `run` of the image.
#[test]
fn import_takes_a_gzip_tarball_from_gnu_tar() {
    let md = Mydocker::new();
    let token = unique_token();
    let dir = host_dir();
    let root = dir.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    let long = host_rootfs(&root, &token);
    let tarball = dir.path().join("image.tar.gz");
    let mut tar = Command::new("tar");
    tar.arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&root)
        .arg(".")
        .stdin(Stdio::null());
    mydocker_stage_tests::finish(tar).success();
    import_file(&md, &tarball, "gnu");
    check_rootfs_image(&md, "gnu", &token, &long, "GNU tar (gzip)");
}

/// `import` of a tarball made by Python's tarfile (PAX headers, hard
/// links), then `run` of the image.
#[test]
fn import_takes_a_tarball_from_pythons_tarfile() {
    let md = Mydocker::new();
    let token = unique_token();
    let dir = host_dir();
    let root = dir.path().join("rootfs");
    std::fs::create_dir(&root).unwrap();
    let long = host_rootfs(&root, &token);
    let tarball = dir.path().join("image.tar");
    let mut python = Command::new("python3");
    python
        .args([
            "-c",
            "import sys, tarfile\n\
             with tarfile.open(sys.argv[2], 'w', format=tarfile.PAX_FORMAT) as tar:\n\
             \x20   tar.add(sys.argv[1], arcname='.')\n",
        ])
        .arg(&root)
        .arg(&tarball)
        .stdin(Stdio::null());
    mydocker_stage_tests::finish(python).success();
    import_file(&md, &tarball, "python");
    check_rootfs_image(&md, "python", &token, &long, "Python's tarfile");
}

/// `import - NAME` reads the tarball on standard input (plain or gzip),
/// prints the SHA-256 of what it read; importing over a name replaces the
/// image.
#[test]
fn import_reads_standard_input_and_replaces_an_existing_name() {
    let md = Mydocker::new();
    let dir = host_dir();
    let first = dir.path().join("first.tar");
    let second = dir.path().join("second.tar.gz");
    std::fs::write(&first, marked_image("first")).unwrap();
    std::fs::write(&second, gzip(&marked_image("second"))).unwrap();
    for (file, want) in [(&first, "first\n"), (&second, "second\n")] {
        let mut command = md.command(&["import", "-", "x"]);
        command.stdin(std::fs::File::open(file).unwrap());
        let out = md.finish(command);
        assert_eq!(
            out.success().trim(),
            format!("sha256:{}", sha256_hex(file)),
            "`import - x < {}` prints the SHA-256 of what it read",
            file.display()
        );
        assert_eq!(
            md.exec(&["run", "x", "cat", "/marker"]).success(),
            want,
            "after `import - x < {}`, x is that image",
            file.display()
        );
    }
    assert!(
        std::fs::read(image_file(&md, "x")).unwrap() == std::fs::read(&second).unwrap(),
        "a gzip tarball stays gzip in the store"
    );
    assert_eq!(md.exec(&["images", "-q"]).success().lines().count(), 1);
}

/// One ustar header of a device (`kind` b'3' character, b'4' block).
fn device_entry(path: &str, kind: u8, major: u32, minor: u32) -> Vec<u8> {
    let mut header = raw_entry(path, kind, "", b"");
    header[329..336].copy_from_slice(format!("{major:07o}").as_bytes());
    header[337..344].copy_from_slice(format!("{minor:07o}").as_bytes());
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header[..512].iter().map(|b| u32::from(*b)).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    header
}

/// A hostile or corrupt tarball is refused by `import` in one line (exit
/// 125), from a file or from standard input, and leaves nothing: no
/// image, no new path under the state root, nothing of its files, nothing
/// written outside.
#[test]
fn import_refuses_hostile_tarballs_and_leaves_nothing() {
    let md = Mydocker::new();
    let dir = host_dir();
    let outside = host_dir();
    let token = unique_token();
    let data = format!("{token}\n");
    let start = || {
        ImageTar::new()
            .root_dir(0o755, 0, 0)
            .file(&format!("first-{token}"), 0o644, data.as_bytes())
            .dir(&format!("dir-{token}"), 0o755)
            .file(&format!("dir-{token}/file"), 0o644, data.as_bytes())
    };
    let hostile = |entries: Vec<Vec<u8>>| -> Vec<u8> {
        let mut bytes = start().into_entries();
        for entry in entries {
            bytes.extend(entry);
        }
        bytes.extend(TAR_END);
        bytes
    };
    let good = start().file("last", 0o644, data.as_bytes()).into_bytes();
    let good_gz = gzip(&good);
    let mut bad_crc = good_gz.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 0xff;
    let out_dir = outside.path().to_string_lossy().into_owned();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "dotdot",
            hostile(vec![raw_entry(
                &format!("../escape-{token}"),
                b'0',
                "",
                data.as_bytes(),
            )]),
        ),
        (
            "block-device",
            hostile(vec![device_entry(&format!("disk-{token}"), b'4', 8, 0)]),
        ),
        (
            "symlink-out",
            hostile(vec![
                raw_entry("out", b'2', &out_dir, b""),
                raw_entry(&format!("out/through-{token}"), b'0', "", data.as_bytes()),
            ]),
        ),
        ("gzip-bad-crc", bad_crc),
        ("tar-cut", good[..good.len() - 1024 - 500].to_vec()),
        (
            "after-the-end",
            [good.clone(), start().into_bytes()].concat(),
        ),
    ];
    // A good import first: the store and its directories exist.
    let good_file = small_tarball(dir.path(), "good.tar", "good\n");
    import_file(&md, &good_file, "good");
    let before = state_paths(&md);
    let leftovers = || -> Vec<PathBuf> {
        let mut found = Vec::new();
        for path in state_paths(&md) {
            let full = md.root().join(&path);
            let named = path.to_string_lossy().contains(&token);
            let holds_it = std::fs::symlink_metadata(&full)
                .is_ok_and(|m| m.is_file() && m.len() < (1 << 20))
                && std::fs::read(&full).is_ok_and(|b| holds(&b, &token));
            if named || holds_it {
                found.push(path);
            }
        }
        found
    };
    assert!(leftovers().is_empty(), "{:?}", leftovers());
    let images = md.exec(&["images", "-q"]).success().to_string();
    for (name, tarball) in cases {
        let file = dir.path().join(format!("{name}.tar"));
        std::fs::write(&file, &tarball).unwrap();
        for from_stdin in [false, true] {
            let command = if from_stdin {
                let mut command = md.command(&["import", "-", name]);
                command.stdin(std::fs::File::open(&file).unwrap());
                command
            } else {
                md.command(&["import", file.to_str().unwrap(), name])
            };
            let how = if from_stdin {
                "import - NAME <FILE"
            } else {
                "import FILE NAME"
            };
            let out = md.finish(command);
            assert_eq!(
                out.code,
                Some(125),
                "`{how}` of the {name} tarball should be refused: {out:#?}"
            );
            out.one_line_failure();
            assert!(
                !image_file(&md, name).exists(),
                "the refused {name} tarball is in the store"
            );
            let after = state_paths(&md);
            let added: Vec<&PathBuf> = after.difference(&before).collect();
            let removed: Vec<&PathBuf> = before.difference(&after).collect();
            assert!(
                added.is_empty() && removed.is_empty(),
                "`{how}` of the refused {name} tarball changed the state root: added {added:?}, removed {removed:?}"
            );
            assert!(
                leftovers().is_empty(),
                "`{how}` of the refused {name} tarball left some of its files: {:?}",
                leftovers()
            );
            let written: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
            assert!(
                written.is_empty(),
                "the {name} tarball wrote outside the state root: {written:?}"
            );
        }
    }
    assert_eq!(
        md.exec(&["images", "-q"]).success(),
        images,
        "the refused tarballs should add no image"
    );
}

/// `export ID -o FILE` writes the container's files as `commit` would, and
/// `import FILE` gives them back: a listing of every file (type, mode,
/// owner, size, link count, mtime, content, link target, device) in the
/// container and in a container of the imported image is the same. The
/// tarball on standard output holds the same entries; `-o` over an
/// existing file replaces it in one step, leaving no temporary file.
#[test]
fn export_then_import_gives_the_containers_files_back() {
    let md = Mydocker::new();
    let token = unique_token();
    md.add_image("base", &base_image(&token).into_bytes());
    let mut ctr = Ctr::start(
        &md,
        "base",
        &[],
        &format!("{CHANGES}\n{MODES}\nmkdir /big && dd if=/dev/urandom of=/big/random bs=64k count=16 2>/dev/null"),
    );
    let trees = "bin data made tmp big";
    let before = ctr.sh(&probe(trees));
    let dir = host_dir();
    let file = dir.path().join("exported.tar");
    std::fs::write(&file, "an older file").unwrap();
    let mut held = std::fs::File::open(&file).unwrap();
    let out = md.exec(&["export", &ctr.id, "-o", file.to_str().unwrap()]);
    assert_eq!(
        out.success(),
        "",
        "`export -o FILE` writes the tarball to FILE, nothing to standard output"
    );
    let mut old = Vec::new();
    held.read_to_end(&mut old).unwrap();
    assert!(
        old == b"an older file",
        "export -o over an existing file should write a new file and rename it, never write into the old one (which a reader had open): it now holds {} bytes",
        old.len()
    );
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["exported.tar"], "export -o left a temporary file");
    let exported = std::fs::read(&file).unwrap();
    let entries = read_tar(&exported);
    assert!(
        !entries
            .values()
            .any(|e| e.kind == '3' && e.device == Some((0, 0))),
        "the exported tarball holds whiteouts (0/0 character devices)"
    );
    assert!(!holds(&exported, &token), "the export holds deleted files");

    // To standard output.
    let stdout_file = dir.path().join("stdout.tar");
    let mut command = Command::new("sh");
    command
        .args(["-c", "exec \"$0\" export \"$1\" > \"$2\""])
        .arg(md.bin())
        .arg(&ctr.id)
        .arg(&stdout_file)
        .env("MYDOCKER_ROOT", md.root())
        .stdin(Stdio::null());
    md.finish(command).success();
    let streamed = read_tar(&std::fs::read(&stdout_file).unwrap());
    let kinds = |e: &BTreeMap<String, Entry>| -> Vec<(String, char)> {
        e.iter().map(|(p, e)| (p.clone(), e.kind)).collect()
    };
    assert_eq!(
        kinds(&streamed),
        kinds(&entries),
        "`export ID > FILE` and `export ID -o FILE` should hold the same entries"
    );

    import_file(&md, &file, "round-trip");
    let out = md.exec(&["run", "round-trip", "sh", "-c", &probe(trees)]);
    let after = out.success();
    assert!(
        before == after,
        "a container of the imported export should see every file as the exported container did; -: only in the exported container, +: only in the imported image:\n{}",
        diff_lines(&before, after)
    );

    // Never a tarball on a terminal: `script` gives export a pseudo-terminal
    // as its standard output.
    let mut command = Command::new("script");
    command
        .args([
            "-qec",
            &format!("'{}' export {}", md.bin().display(), ctr.id),
            "/dev/null",
        ])
        .env("MYDOCKER_ROOT", md.root())
        .stdin(Stdio::null());
    let out = md.finish(command);
    assert!(
        out.code == Some(125)
            && out
                .stdout
                .contains("refusing to write a tarball to a terminal"),
        "`export ID` with a terminal as its output should refuse (exit 125): `mydocker: refusing to write a tarball to a terminal: use -o FILE or redirect the output`: {out:#?}"
    );
    assert_eq!(ctr.sh("echo still running"), "still running\n");
    ctr.finish().success();
}

/// `cp -al` hard-links symlinks too. The second name of a symlink must not
/// become a tar hard link (the unpacker would follow the symlink): the
/// committed image runs, and its copy of `/bin` still holds symlinks.
#[test]
fn hard_linked_symlinks_give_an_image_that_runs() {
    let md = Mydocker::new();
    let mut ctr = Ctr::start(&md, "busybox", &[], "cp -al /bin /linked");
    let count = ctr.sh("ls /linked | wc -l");
    commit(&md, &ctr, "linked");
    let out = md.exec(&[
        "run",
        "linked",
        "sh",
        "-c",
        "ls /linked | wc -l; test -L /linked/sh && echo symlink",
    ]);
    assert_eq!(
        out.success(),
        format!("{}symlink\n", count),
        "a container whose /linked holds hard links to /bin's symlinks should commit to an image that runs: {out:#?}"
    );
    ctr.finish();
}

/// Two commits of an unchanged container have the same content. `rmi` of
/// one name only untags it: the other still lists and runs, and its copy
/// is deleted only with the last name (`Deleted:` then, as in Docker).
#[test]
fn rmi_of_one_of_two_names_with_the_same_content_only_untags_it() {
    let md = Mydocker::new();
    let ctr = Ctr::start(&md, "busybox", &[], "echo same > /same");
    let first = commit(&md, &ctr, "twin:a");
    let second = commit(&md, &ctr, "twin:b");
    assert_eq!(
        first, second,
        "two commits of an unchanged container give the same tarball"
    );
    ctr.finish();
    md.exec(&["run", "twin:a", "true"]).success();
    let out = md.exec(&["rmi", "twin:a"]);
    assert_eq!(
        out.success(),
        "Untagged: twin:a\n",
        "twin:b still has this content: nothing is deleted"
    );
    assert!(md.exec(&["images", "-q"]).success().contains(&first[..12]));
    assert_eq!(
        md.exec(&["run", "twin:b", "cat", "/same"]).success(),
        "same\n"
    );
    let out = md.exec(&["rmi", "twin:b"]);
    assert_eq!(
        out.success(),
        format!("Untagged: twin:b\nDeleted: sha256:{first}\n"),
        "the last name of the content goes with the content"
    );
    assert!(
        !md.root().join("layers").join(&first).exists(),
        "the copy goes with the last name"
    );
}
