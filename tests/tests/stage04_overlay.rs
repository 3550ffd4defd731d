//! Stage 4: each image is unpacked once into a read-only copy that all its
//! containers share, and each container writes to a layer of its own, on
//! an overlay mount.
//!
//! The tests find an image's copy on the host without knowing the layout:
//! every image here holds a file of random content, and the copy is
//! wherever a regular file with that content lies under the state root,
//! outside `images/`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mydocker_stage_tests::{
    children_of, descendants, differences, gzip, kill_survivors, raw_entry, signal, snapshot,
    start_time, unique_token, ImageTar, Mydocker, Outcome, TAR_END,
};

/// The content of an image's `/marker`: its token and a newline.
fn marker(token: &str) -> Vec<u8> {
    format!("{token}\n").into_bytes()
}

/// A busybox image whose `/marker` holds `token`.
fn marked_image(token: &str) -> ImageTar {
    ImageTar::new()
        .root_dir(0o755, 0, 0)
        .busybox()
        .file("marker", 0o644, &marker(token))
}

/// The one copy of an image's `/marker` on the host, given its token.
fn the_copy(md: &Mydocker, token: &str, when: &str) -> PathBuf {
    let copies = md.copies_of(&marker(token));
    assert_eq!(
        copies.len(),
        1,
        "{when}, the image's /marker should exist exactly once under the state root {} (outside images/), in the image's shared, unpacked copy; found it {} times: {copies:#?}",
        md.root().display(),
        copies.len()
    );
    copies[0].clone()
}

/// The file system type of `/` in a container's mount table (the last,
/// topmost, mount on `/`), and its line.
fn root_mount(mountinfo: &str) -> (String, String) {
    let line = mountinfo
        .lines()
        .rfind(|line| line.split_whitespace().nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no mount on / in the container's mount table:\n{mountinfo}"));
    let fstype = line
        .split_once(" - ")
        .and_then(|(_, right)| right.split_whitespace().next())
        .unwrap_or("")
        .to_string();
    (fstype, line.to_string())
}

/// `/` is an overlay, and its lower layer is the image's copy: the same
/// file (same inode) for every container of the image, while they run
/// side by side.
#[test]
fn the_root_is_an_overlay_on_the_images_one_shared_copy() {
    let md = Mydocker::new();
    let token = unique_token();
    md.add_image("shared", &marked_image(&token).into_bytes());
    let script = "stat -c %i /marker; cat /proc/self/mountinfo; echo stated; read x || true";
    let mut first = md.start_in("shared", &[], script);
    let mut second = md.start_in("shared", &[], script);
    let mut seen = Vec::new();
    for container in [&mut first, &mut second] {
        let out = container.process().read_until("stated");
        let (inode, mountinfo) = out.split_once('\n').unwrap_or(("", ""));
        let (fstype, line) = root_mount(mountinfo);
        assert_eq!(
            fstype, "overlay",
            "`/` in the container should be an overlay mount (lower: the image's copy, upper: the container's own layer); it is `{fstype}`: {line}"
        );
        seen.push(inode.trim().to_string());
    }
    let copy = the_copy(&md, &token, "while two containers of the image run");
    let host_inode = std::fs::metadata(&copy).unwrap().ino().to_string();
    assert_eq!(
        seen,
        [host_inode.clone(), host_inode.clone()],
        "both containers' /marker should be the file {} of the image's shared copy (inode {host_inode}), read through the overlay's lower layer (container inodes: {seen:?})",
        copy.display()
    );
    first.finish().success();
    second.finish().success();
}

/// The merged `/` shows the upper layer's directory, which mydocker made
/// inside the container's private directory on the host: it must take the
/// image root's mode and owner (755, root), not those of its private
/// surroundings (a `/` of mode 700 locks every user but root out of the
/// whole container).
#[test]
fn the_root_directory_is_the_images_not_a_private_one() {
    let md = Mydocker::new();
    let with_root = ImageTar::new().root_dir(0o755, 0, 0).busybox();
    let without = ImageTar::new().busybox();
    for (name, image) in [("with-root-entry", with_root), ("no-root-entry", without)] {
        md.add_image(name, &image.into_bytes());
        for run in ["first", "second"] {
            let out = md.exec(&["run", name, "stat", "-c", "%a %u:%g", "/"]);
            assert_eq!(
                out.success().trim(),
                "755 0:0",
                "{run} run of the image {name}: `/` in the container should have the mode and owner of the image's root directory (mode, uid:gid)"
            );
        }
    }
}

/// The image of the copy-on-write tests: files to change, delete and
/// keep, under /data.
fn data_image(token: &str) -> ImageTar {
    marked_image(token)
        .dir("data", 0o755)
        .file("data/config", 0o644, b"original\n")
        .file("data/append-to", 0o644, b"first line\n")
        .file("data/truncate-me", 0o644, b"some content\n")
        .file("data/chmod-me", 0o644, b"mode 644\n")
        .file("data/chown-me", 0o644, b"owned by root\n")
        .file("data/touch-me", 0o644, b"dated 1970\n")
        .file("data/delete-me", 0o644, b"to be deleted\n")
        .file("data/move-me", 0o644, b"to be moved\n")
        .file("data/link-me", 0o644, b"to be hard-linked\n")
        .dir("data/dir-to-delete", 0o755)
        .dir("data/dir-to-delete/inner", 0o755)
        .file("data/dir-to-delete/inner/file", 0o644, b"deep\n")
        .dir("data/dir-to-fill", 0o755)
        .file("data/dir-to-fill/old", 0o644, b"old\n")
}

/// Every kind of change a container can make to the image's files.
const MUTATE: &str = "set -e; cd /data; \
    echo changed > config; echo second line >> append-to; truncate -s 0 truncate-me; \
    chmod 600 chmod-me; chown 1:1 chown-me; touch touch-me; rm delete-me; mv move-me moved; \
    ln link-me hard-link; rm -r dir-to-delete; echo new > dir-to-fill/new; rm dir-to-fill/old; \
    mkdir made; echo created > /created; rm /marker; set +e";

/// What a container sees of /data: each path's type, mode, owner and
/// size, and each file's checksum.
const PROBE: &str = "cd /data && find . | sort | xargs stat -c '%n %F %a %u:%g %s' && \
    find . -type f | sort | xargs md5sum && ls /";

/// Writes, changes and deletes go to the container's own layer: the next
/// container sees the image exactly as it was.
#[test]
fn writes_and_deletes_stay_in_the_containers_own_layer() {
    let md = Mydocker::new();
    let token = unique_token();
    md.add_image("data", &data_image(&token).into_bytes());
    let run = |script: &str| {
        md.exec(&["run", "data", "sh", "-c", script])
            .success()
            .to_string()
    };
    let before = run(PROBE);
    let has = |text: &str, start: &str| text.lines().any(|l| l.starts_with(start));
    assert!(
        has(&before, "./config regular file 644 0:0 9") && has(&before, "marker"),
        "the image's files, as a first container sees them:\n{before}"
    );
    let changed = run(&format!("{MUTATE}; {PROBE}"));
    for (what, line) in [
        ("the new content", "./config regular file 644 0:0 8"),
        ("the new mode", "./chmod-me regular file 600 "),
        ("the new owner", "./chown-me regular file 644 1:1 "),
        ("the new directory", "./made directory "),
        ("the renamed file", "./moved regular file "),
        ("the hard link", "./hard-link regular file "),
        (
            "the new file in a directory of the image",
            "./dir-to-fill/new regular file ",
        ),
    ] {
        assert!(
            has(&changed, line),
            "the container that made the changes should see {what} (`{line}`):\n{changed}"
        );
    }
    for gone in ["./delete-me ", "./dir-to-delete ", "./move-me "] {
        assert!(
            !has(&changed, gone),
            "the container that deleted {gone} still sees it:\n{changed}"
        );
    }
    let after = run(PROBE);
    assert_eq!(
        after, before,
        "a new container should see the image as it was, none of the previous container's changes (left: after the changes, right: before them)"
    );
    // And a container that runs while another one changes things.
    let mut changer = md.start_in(
        "data",
        &[],
        &format!("{MUTATE}; echo changed; read x || true"),
    );
    changer.process().expect_line("changed");
    assert_eq!(
        run(PROBE),
        before,
        "a container should not see the changes of another one that runs at the same time"
    );
    changer.finish().success();
}

/// Containers never change the image: not the tarball in the store, not a
/// byte, a mode, an owner or a date of its unpacked copy, which is
/// unpacked once and then only read.
#[test]
fn the_tarball_and_its_unpacked_copy_never_change() {
    let md = Mydocker::new();
    let token = unique_token();
    let tarball = data_image(&token).into_bytes();
    md.add_image("data", &tarball);
    let tar_path = md.images().join("data.tar");
    let tar_meta = std::fs::metadata(&tar_path).unwrap();
    md.exec(&["run", "data", "true"]).success();
    let copy_root = the_copy(&md, &token, "after a first run")
        .parent()
        .unwrap()
        .to_path_buf();
    let first = snapshot(&copy_root);
    // The copy is the image: every entry of the tarball, as it is there.
    for (path, mode, data) in [
        ("data/config", 0o644, &b"original\n"[..]),
        ("data/dir-to-delete/inner/file", 0o644, b"deep\n"),
        ("marker", 0o644, &marker(&token)),
    ] {
        let entry = first.get(Path::new(path)).unwrap_or_else(|| {
            panic!(
                "no {path} in the image's copy {}, which holds: {:?}",
                copy_root.display(),
                first.keys().collect::<Vec<_>>()
            )
        });
        assert_eq!(
            (entry.0 & 0o7777, &entry.6[..]),
            (mode, data),
            "{path} in the image's copy {} (mode, content)",
            copy_root.display()
        );
    }
    let unchanged = |when: &str| {
        let diff = differences(&first, &snapshot(&copy_root));
        assert!(
            diff.is_empty(),
            "the image's copy {} changed {when} (a container must write to its own layer only, and the copy is unpacked once):\n{}",
            copy_root.display(),
            diff.join("\n")
        );
    };
    md.exec(&["run", "data", "sh", "-c", MUTATE]).success();
    unchanged("after a container changed every file it could");
    let mut running = md.start_in(
        "data",
        &[],
        &format!("{MUTATE}; echo changed; read x || true"),
    );
    running.process().expect_line("changed");
    unchanged("while a second container changed every file it could");
    running.finish().success();
    md.exec(&["run", "data", "sh", "-c", MUTATE]).success();
    unchanged("after three containers changed every file they could");
    assert_eq!(
        std::fs::read(&tar_path).unwrap(),
        tarball,
        "the image's tarball changed"
    );
    let now = std::fs::metadata(&tar_path).unwrap();
    assert_eq!(
        (now.ino(), now.mtime(), now.mtime_nsec()),
        (tar_meta.ino(), tar_meta.mtime(), tar_meta.mtime_nsec()),
        "the image's tarball was rewritten (inode, mtime)"
    );
}

/// A file deleted in a container is deleted for that container only (a
/// whiteout in its upper layer): another container running at the same
/// time still sees it, and so does the next one.
#[test]
fn a_file_deleted_in_one_container_is_still_there_for_another() {
    let md = Mydocker::new();
    let token = unique_token();
    let image = marked_image(&token)
        .dir("data", 0o755)
        .file("data/victim", 0o644, b"still here\n")
        .dir("data/victim-dir", 0o755)
        .file("data/victim-dir/inner", 0o644, b"inner\n")
        .file("data/bystander", 0o644, b"untouched\n");
    md.add_image("whiteouts", &image.into_bytes());
    let mut deleter = md.start_in(
        "whiteouts",
        &[],
        "rm /data/victim && rm -r /data/victim-dir && echo new > /data/created && ls /data && echo deleted; \
         read x || true; ls /data; cat /data/victim 2>/dev/null || echo victim-gone",
    );
    let listed = deleter.process().read_until("deleted");
    assert_eq!(
        listed, "bystander\ncreated\n",
        "the container that deleted /data/victim and /data/victim-dir should no longer see them"
    );
    let other = md.exec(&[
        "run",
        "whiteouts",
        "sh",
        "-c",
        "ls /data; cat /data/victim /data/victim-dir/inner",
    ]);
    assert_eq!(
        other.success(),
        "bystander\nvictim\nvictim-dir\nstill here\ninner\n",
        "a container running beside the one that deleted files should see the image unchanged"
    );
    let out = deleter.finish();
    assert_eq!(
        out.success(),
        "bystander\ncreated\ndeleted\nbystander\ncreated\nvictim-gone\n",
        "the deleted files should stay deleted for the container that deleted them"
    );
    let next = md.exec(&["run", "whiteouts", "ls", "/data"]);
    assert_eq!(next.success(), "bystander\nvictim\nvictim-dir\n");
}

/// Eight first runs of a new image at once: every one runs, and the image
/// is unpacked once (one waits for another's unpack, or loses a race and
/// cleans up after itself).
#[test]
fn eight_parallel_first_runs_unpack_the_image_once() {
    let md = Mydocker::new();
    let token = unique_token();
    let mut image = marked_image(&token).dir("many", 0o755);
    for i in 0..300 {
        image = image.file(&format!("many/{i:03}"), 0o644, format!("{i}\n").as_bytes());
    }
    md.add_image("parallel", &image.into_bytes());
    let runs: Vec<_> = (0..8)
        .map(|_| {
            md.spawn_command(md.command(&[
                "run",
                "parallel",
                "sh",
                "-c",
                "cat /marker; ls /many | wc -l",
            ]))
        })
        .collect();
    let outcomes: Vec<Outcome> = runs.into_iter().map(|run| run.wait()).collect();
    for (i, out) in outcomes.iter().enumerate() {
        assert_eq!(
            out.code,
            Some(0),
            "run {} of 8 parallel first runs of a new image failed: {out:#?}",
            i + 1
        );
        assert_eq!(
            out.stdout,
            format!("{token}\n300\n"),
            "run {} of 8 saw an incomplete image: {out:#?}",
            i + 1
        );
    }
    the_copy(&md, &token, "after 8 parallel first runs");
    assert_eq!(
        md.paths_named("299").len(),
        1,
        "after 8 parallel first runs, the image's files should exist once (no second, half or abandoned copy): {:#?}",
        md.paths_named("299")
    );
}

/// Write `tarball` over the image `name`'s tarball in place (same inode),
/// as `cp` does.
fn overwrite(md: &Mydocker, name: &str, tarball: &[u8]) -> std::fs::File {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(md.images().join(format!("{name}.tar")))
        .unwrap();
    file.write_all(tarball).unwrap();
    file
}

/// The copy is named by the tarball's content: a new tarball under the
/// same name gives new containers the new files, even one of the same size
/// written in place with the old modification time; the copies of the old
/// ones go once no container can use them.
#[test]
fn a_replaced_tarball_gives_new_containers_the_new_image() {
    let md = Mydocker::new();
    let tokens: Vec<String> = (0..3).map(|_| unique_token()).collect();
    let images: Vec<Vec<u8>> = tokens
        .iter()
        .map(|t| marked_image(t).into_bytes())
        .collect();
    let cat = || {
        md.exec(&["run", "swap", "cat", "/marker"])
            .success()
            .to_string()
    };
    md.add_image("swap", &images[0]);
    assert_eq!(cat(), format!("{}\n", tokens[0]));
    // A new tarball written over the old one, as `cp new.tar images/swap.tar` does,
    // dated an hour back (as `cp -p` or `tar -x` can): well before any clock
    // tick of this test, so that a digest remembered for it is trusted.
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    overwrite(&md, "swap", &images[1])
        .set_modified(an_hour_ago)
        .unwrap();
    assert_eq!(
        cat(),
        format!("{}\n", tokens[1]),
        "after images/swap.tar was replaced, a new container still saw the old image"
    );
    // Same size, written in place, and dated back to the previous one's
    // modification time: only the content (and the ctime) tells them apart.
    assert_eq!(images[1].len(), images[2].len());
    overwrite(&md, "swap", &images[2])
        .set_modified(an_hour_ago)
        .unwrap();
    assert_eq!(
        cat(),
        format!("{}\n", tokens[2]),
        "after images/swap.tar was replaced by a tarball of the same size and modification time, a new container still saw the old image: the copy must be named by the tarball's content"
    );
    cat();
    for (i, token) in tokens.iter().enumerate() {
        let copies = md.copies_of(&marker(token));
        let want = if i == 2 { 1 } else { 0 };
        assert_eq!(
            copies.len(),
            want,
            "after the tarball was replaced twice and more runs, the copy of version {} of the image should be {}: {copies:#?}",
            i + 1,
            if want == 1 { "there, once" } else { "gone, since no container can use it" }
        );
    }
}

/// A copy that a running container stands on is kept, even when its
/// tarball was replaced and other runs clean up; it goes after that
/// container ended.
#[test]
fn a_copy_is_removed_only_when_no_container_can_use_it() {
    let md = Mydocker::new();
    let old = unique_token();
    let new = unique_token();
    let late = format!("read late, {old}\n");
    md.add_image(
        "swap",
        &marked_image(&old)
            .dir("late", 0o755)
            .file("late/file", 0o644, late.as_bytes())
            .into_bytes(),
    );
    let running = md.start_in("swap", &[], "read x || true; cat /marker /late/file");
    // Replaced the way a careful user does: a new file renamed over it.
    let tmp = md.images().join("swap.tar.new");
    std::fs::write(&tmp, marked_image(&new).into_bytes()).unwrap();
    std::fs::rename(&tmp, md.images().join("swap.tar")).unwrap();
    for _ in 0..2 {
        let out = md.exec(&["run", "swap", "cat", "/marker"]);
        assert_eq!(out.success(), format!("{new}\n"));
    }
    let out = running.finish();
    assert_eq!(
        out.success(),
        format!("{old}\n{late}"),
        "a container still running on the old image lost its files when later runs cleaned up (the old copy must stay while a container uses it)"
    );
    md.exec(&["run", "swap", "true"]).success();
    let left = md.copies_of(&marker(&old));
    assert!(
        left.is_empty(),
        "the copy of the replaced image should be removed once its last container ended and another run came: {left:#?}"
    );
    the_copy(&md, &new, "after the tarball was replaced");
}

/// Anything of an image's unpacked files left under the state root: paths
/// whose name holds `token`, files whose content does.
fn leftovers(md: &Mydocker, token: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    md.walk_outside_images(&mut |path, meta| {
        let named = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().contains(token));
        let holds = meta.is_file()
            && meta.len() < 4096
            && std::fs::read(path)
                .is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(token));
        if named || holds {
            found.push(path.to_path_buf());
        }
    });
    found
}

/// The start of every image of [`hostile_or_corrupt_tarballs_leave_no_copy`]:
/// good entries, whose names and contents hold `token`.
fn good_start(token: &str) -> ImageTar {
    ImageTar::new()
        .root_dir(0o755, 0, 0)
        .busybox()
        .file("marker", 0o644, &marker(token))
        .dir(&format!("dir-{token}"), 0o755)
        .file(&format!("dir-{token}/file"), 0o644, token.as_bytes())
}

/// A tarball with a bad entry, or a corrupt one, is refused; whatever
/// was unpacked before the problem showed is removed, so that no later
/// run uses half an image: the second run of it fails the same way.
#[test]
fn hostile_or_corrupt_tarballs_leave_no_copy() {
    let md = Mydocker::new();
    let outside = tempfile::Builder::new()
        .prefix("mydocker-outside-")
        .tempdir()
        .unwrap();
    let out_dir = outside.path().to_string_lossy().into_owned();
    let token = unique_token();
    let data = format!("{token}\n");
    let hostile = |entries: Vec<Vec<u8>>| -> Vec<u8> {
        let mut bytes = good_start(&token).into_entries();
        for entry in entries {
            bytes.extend(entry);
        }
        bytes.extend(TAR_END);
        bytes
    };
    let good = good_start(&token)
        .file("last", 0o644, token.as_bytes())
        .into_bytes();
    let good_gz = gzip(&good);
    let n = good_gz.len();
    let mut bad_crc = good_gz.clone();
    bad_crc[n - 8] ^= 0xff;
    let mut bad_header = good.clone();
    // The header of the last entry, `last`, with a wrong checksum.
    bad_header[good.len() - 1024 - 1024 + 148] ^= 0x07;
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
            "symlink-out",
            hostile(vec![
                raw_entry("out", b'2', &out_dir, b""),
                raw_entry(&format!("out/through-{token}"), b'0', "", data.as_bytes()),
            ]),
        ),
        (
            "symlink-up",
            hostile(vec![
                raw_entry("up", b'2', "..", b""),
                raw_entry(&format!("up/climbed-{token}"), b'0', "", data.as_bytes()),
            ]),
        ),
        ("gzip-bad-crc", bad_crc),
        ("gzip-truncated", good_gz[..n * 3 / 4].to_vec()),
        // Cut in the header of the last entry, then in its data.
        ("tar-cut-header", good[..good.len() - 1024 - 700].to_vec()),
        ("tar-cut-data", good[..good.len() - 1024 - 500].to_vec()),
        ("tar-bad-header", bad_header),
    ];
    for (name, tarball) in cases {
        md.add_image(name, &tarball);
        for attempt in ["first", "second"] {
            let out = md.exec(&["run", name, "echo", "RAN"]);
            assert!(
                !out.stdout.contains("RAN"),
                "the {attempt} run of the image {name} ran a command: {out:#?}"
            );
            out.one_line_failure();
            let left = leftovers(&md, &token);
            assert!(
                left.is_empty(),
                "the {attempt} run of the refused image {name} left some of its files under the state root: {left:#?}"
            );
            assert!(
                md.containers_left().is_empty(),
                "{name} left {:?}",
                md.containers_left()
            );
            let written: Vec<_> = std::fs::read_dir(outside.path()).unwrap().collect();
            assert!(
                written.is_empty(),
                "the image {name} wrote outside the state root: {written:?}"
            );
        }
    }
    // The good image runs: no lock or half copy stands in its way.
    md.add_image("good", &good);
    let out = md.exec(&["run", "good", "cat", "/last"]);
    assert_eq!(out.success(), token);
}

/// An image with `files` small files, slow enough to unpack that a test
/// can kill `run` in the middle: `/a-first` (the token) first, then
/// `/d/NN/NNNNN`, then `/zz-last`.
fn big_image(token: &str, files: usize) -> Vec<u8> {
    let mut image = ImageTar::new()
        .root_dir(0o755, 0, 0)
        .busybox()
        .file("a-first", 0o644, &marker(token))
        .dir("d", 0o755);
    for i in 0..files {
        if i % 1000 == 0 {
            image = image.dir(&format!("d/{:02}", i / 1000), 0o755);
        }
        image = image.file(&format!("d/{:02}/{i:05}", i / 1000), 0o644, b"x\n");
    }
    image.file("zz-last", 0o644, b"last\n").into_bytes()
}

/// kill -9 of `run` while it unpacks an image for the first time leaves a
/// half copy behind; the next run must neither use it nor keep it: it
/// sees the whole image, and one copy remains.
#[test]
fn a_run_killed_during_the_first_unpack_leaves_nothing_partial() {
    let token = unique_token();
    // A few thousand files take a second or so to unpack on a slow disk;
    // on a fast one, the unpack may end before the test sees it begin:
    // then try again with more files.
    for (attempt, files) in [2_000, 8_000, 30_000].into_iter().enumerate() {
        let md = Mydocker::new();
        md.add_image("big", &big_image(&token, files));
        let mut child = md.spawn_command(md.command(&["run", "big", "true"]));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while md.paths_named("a-first").is_empty() && child.is_running() {
            assert!(
                std::time::Instant::now() < deadline,
                "waited 20 s for the image's first file, a-first, to appear under the state root {}",
                md.root().display()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        signal(child.id(), libc::SIGKILL);
        let killed = child.wait();
        if killed.code.is_some() {
            killed.success(); // it ended before the kill: not in failure
        }
        if killed.code.is_some() || !md.paths_named("zz-last").is_empty() {
            // The unpack was over before the kill: that proves nothing.
            assert!(
                attempt < 2,
                "could not kill `run` during the unpack of {files} files in 3 attempts: {killed:#?}"
            );
            eprintln!(
                "attempt {}: the unpack ended before the kill; again",
                attempt + 1
            );
            md.exec(&["run", "big", "true"]).success();
            continue;
        }
        let out = md.exec(&[
            "run",
            "big",
            "sh",
            "-c",
            "cat /a-first /zz-last; find /d -type f | wc -l",
        ]);
        assert_eq!(
            out.success(),
            format!("{token}\nlast\n{files}\n"),
            "after a run was killed during the unpack, the next run should see the whole image"
        );
        for name in ["a-first", "zz-last"] {
            let found = md.paths_named(name);
            assert_eq!(
                found.len(),
                1,
                "after a run was killed during the unpack and the next one unpacked the image, exactly one copy should remain (nothing of the killed run's half copy); {name} is at: {found:#?}"
            );
        }
        let mounts = md.mounts_left();
        assert!(mounts.is_empty(), "mounts left on the host: {mounts:#?}");
        return;
    }
}

/// Whatever way a run ends, nothing of it stays mounted on the host: not
/// after a success, a failure, a container killed, or `run` itself killed
/// (once the next run has cleaned up after it).
#[test]
fn nothing_stays_mounted_on_the_host_after_any_run() {
    let _lock = mydocker_stage_tests::cgroups_shared();
    let md = Mydocker::new();
    let token = unique_token();
    md.add_image("img", &marked_image(&token).into_bytes());
    let mut corrupt = gzip(&marked_image(&unique_token()).into_bytes());
    let n = corrupt.len();
    corrupt[n - 8] ^= 0xff;
    md.add_image("corrupt", &corrupt);
    let check = |after: &str| {
        let left = md.mounts_left();
        assert!(
            left.is_empty(),
            "after {after}, mounts are left on the host:\n{}",
            left.join("\n")
        );
    };
    md.exec(&["run", "img", "true"]).success();
    check("a run that succeeded");
    assert_eq!(md.exec(&["run", "img", "sh", "-c", "exit 3"]).code, Some(3));
    check("a run whose command failed");
    md.exec(&["run", "img", "no-such-command"]).failure();
    check("a run of a command the image lacks");
    md.exec(&["run", "corrupt", "true"]).one_line_failure();
    check("a run of a corrupt image");

    // The container killed.
    let running = md.start_in("img", &[], "read x || true");
    let pid1 = children_of(running.id());
    assert_eq!(pid1.len(), 1, "one container process: {pid1:?}");
    signal(pid1[0], libc::SIGKILL);
    running.finish();
    check("a run whose container was killed");

    // `run` itself killed with SIGKILL, its container with it.
    let running = md.start_in("img", &[], "read x || true");
    let cgroups = running.container_cgroups();
    let processes: Vec<(u32, Option<u64>)> = descendants(running.id())
        .into_iter()
        .map(|p| (p, start_time(p)))
        .collect();
    signal(running.id(), libc::SIGKILL);
    assert_eq!(running.finish().code, None);
    assert!(kill_survivors(&processes));
    md.exec(&["run", "img", "true"]).success();
    let left = md.mounts_left();
    md.forget_killed_run(&cgroups);
    assert!(
        left.is_empty(),
        "after `run` was killed with SIGKILL and another run came, mounts are left on the host:\n{}",
        left.join("\n")
    );
}

/// overlayfs cannot use a directory on an overlay (or on some network
/// file systems) as its upper layer: with the state root there, `run`
/// fails in one line that names the problem and the option that moves
/// the root. The overlay under the root is made in a mount namespace of
/// the test's own, which takes it along when it ends.
#[test]
fn a_state_root_on_overlay_is_refused_in_one_line_naming_root() {
    let md = Mydocker::new();
    let dir = tempfile::Builder::new()
        .prefix("mydocker-on-overlay-")
        .tempdir()
        .unwrap();
    let [lower, upper, work, merged] =
        ["lower", "upper", "work", "merged"].map(|d| dir.path().join(d));
    for d in [&lower, &upper, &work, &merged] {
        std::fs::create_dir(d).unwrap();
    }
    let mut command = Command::new("unshare");
    command
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t overlay overlay -o \"lowerdir=$1,upperdir=$2,workdir=$3\" \"$4\" \
             && echo mounted && exec \"$5\" --root \"$4/state\" run busybox echo RAN",
        )
        .arg("sh")
        .args([&lower, &upper, &work, &merged])
        .arg(md.bin())
        .stdin(std::process::Stdio::null());
    let out = md.finish(command);
    assert!(
        out.stdout.starts_with("mounted\n"),
        "the test could not mount an overlay for the state root: {out:#?}"
    );
    assert!(
        !out.stdout.contains("RAN"),
        "the container ran with its state root on an overlay: {out:#?}"
    );
    let stderr = out.one_line_failure();
    assert!(
        stderr.to_lowercase().contains("overlay") && stderr.contains("--root"),
        "the message should say that the state root is on an overlay and that --root moves it: {out:#?}"
    );
    let root = dir.path().to_string_lossy().into_owned();
    let mounts: Vec<String> = mydocker_stage_tests::host_mounts()
        .lines()
        .filter(|l| l.contains(&root))
        .map(String::from)
        .collect();
    assert!(mounts.is_empty(), "mounts left on the host: {mounts:#?}");
    let containers: Vec<_> = std::fs::read_dir(upper.join("state/containers"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(
        containers.is_empty(),
        "the refused run left containers: {containers:?}"
    );
}

/// overlay's mount options are separated by `,` and `:` separates lower
/// layers: a state root whose path holds them (or `=`) must still work,
/// with the paths escaped or, better, relative.
#[test]
fn a_state_root_whose_path_holds_commas_and_colons_works() {
    let md = Mydocker::new();
    let root = md.root().join("odd,root:lower=x");
    std::fs::create_dir_all(root.join("images")).unwrap();
    for dir in [root.clone(), root.join("images")] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let token = unique_token();
    std::fs::write(
        root.join("images/odd.tar"),
        marked_image(&token).into_bytes(),
    )
    .unwrap();
    let root_arg = root.to_string_lossy().into_owned();
    let script = "cat /marker; echo written > /new-file; cat /new-file; \
                  grep -c ' / / .* - overlay ' /proc/self/mountinfo";
    for _ in 0..2 {
        let out = md.exec(&["--root", &root_arg, "run", "odd", "sh", "-c", script]);
        assert_eq!(
            out.success(),
            format!("{token}\nwritten\n1\n"),
            "with the state root {root_arg}, the container should run on an overlay of the image"
        );
    }
    let left: Vec<_> = std::fs::read_dir(root.join("containers"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "containers left: {left:?}");
}

/// A relative state root (`--root rel/dir`, `MYDOCKER_ROOT=rel`) is
/// relative to where mydocker was started, however often it changes its
/// own directory later (to mount the overlay with short relative paths,
/// say): it must be made absolute first.
#[test]
fn a_relative_state_root_works() {
    let md = Mydocker::new();
    let token = unique_token();
    let image = marked_image(&token).into_bytes();
    let script = "cat /marker; echo written > /new-file; cat /new-file";
    for (how, relative) in [("--root", "rel/dir"), ("MYDOCKER_ROOT", "rel-env")] {
        let root = md.root().join(relative);
        std::fs::create_dir_all(root.join("images")).unwrap();
        for dir in [root.clone(), root.join("images")] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(root.join("images/img.tar"), &image).unwrap();
        let mut args = vec!["run", "img", "sh", "-c", script];
        if how == "--root" {
            args.splice(0..0, ["--root", relative]);
        }
        let mut command = md.command(&args);
        command.current_dir(md.root());
        if how == "MYDOCKER_ROOT" {
            command.env("MYDOCKER_ROOT", relative);
        }
        let out = md.finish(command);
        assert_eq!(
            out.success(),
            format!("{token}\nwritten\n"),
            "with the relative state root {how} {relative}, from {}",
            md.root().display()
        );
        let left: Vec<_> = std::fs::read_dir(root.join("containers"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "containers left: {left:?}");
    }
}

/// A cgroup costs every `run` that has one: directories to make and
/// remove, and on cgroup v1 an RCU grace period to move the process in.
/// From stage 4 a container gets cgroups only in the hierarchies of the
/// limits it asks for, and none without a limit. From stage 6, `commit`
/// freezes containers: every container is in a cgroup of the freezer's
/// (v1), or in its one cgroup (v2), and in no other without a limit.
#[test]
fn a_container_without_limits_gets_no_cgroup() {
    let _lock = mydocker_stage_tests::cgroups_shared();
    let md = Mydocker::new();
    let for_the_freezer =
        |line: &str| md.stage() >= 6 && (line.contains(":freezer:") || line.starts_with("0::"));
    let out = md.run(&[], &["cat", "/proc/self/cgroup"]);
    let cgroups = out.success();
    let ours: Vec<&str> = cgroups
        .lines()
        .filter(|l| l.contains("/mydocker/"))
        .collect();
    assert!(
        ours.iter().all(|l| for_the_freezer(l)),
        "a container that asked for no limit is in a cgroup of mydocker's:\n{cgroups}"
    );
    if md.stage() >= 6 {
        assert!(
            !ours.is_empty(),
            "from stage 6 every container needs a cgroup that commit can freeze:\n{cgroups}"
        );
    }
    let out = md.run(&["--pids-limit", "100"], &["cat", "/proc/self/cgroup"]);
    let cgroups = out.success();
    let ours: Vec<&str> = cgroups
        .lines()
        .filter(|l| l.contains("/mydocker/"))
        .collect();
    assert!(
        !ours.is_empty(),
        "--pids-limit 100 gave no cgroup:\n{cgroups}"
    );
    if let mydocker_stage_tests::CgroupLayout::V1(_) = mydocker_stage_tests::cgroup_layout() {
        assert!(
            ours.iter().any(|l| l.contains("pids"))
                && ours
                    .iter()
                    .all(|l| l.contains("pids") || for_the_freezer(l)),
            "--pids-limit alone should need the pids hierarchy only, not: {ours:?}"
        );
    }
}

/// A full disk during the first unpack leaves no half copy: the state
/// root is a tmpfs (inside a mount namespace of the test's own) with room
/// for the busybox tarball but not for its copy as well. The run fails in
/// one line; nothing of the copy stays; with room again, the next run
/// works.
#[test]
fn a_full_disk_during_the_first_unpack_leaves_no_copy() {
    let md = Mydocker::new();
    let dir = tempfile::Builder::new()
        .prefix("mydocker-full-")
        .tempdir()
        .unwrap();
    let script = r#"
        mount -t tmpfs -o size=3m,mode=0700 tmpfs "$1" || exit 99
        "$2" --root "$1" run busybox echo RAN
        echo "rc=$?"
        # What the failed run left, but for the tarball and mydocker's
        # empty directories.
        find "$1" -mindepth 1 ! -path "$1/images*" ! -type d -printf 'left %P\n'
        find "$1" -mindepth 2 -type d ! -path "$1/images*" -printf 'left %P/\n'
        mount -o remount,size=16m "$1" || exit 99
        "$2" --root "$1" run busybox echo RAN
    "#;
    let mut command = Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(dir.path())
        .arg(md.bin())
        .stdin(std::process::Stdio::null());
    let out = md.finish(command);
    assert_ne!(
        out.code,
        Some(99),
        "the test could not set up its tmpfs: {out:#?}"
    );
    let (first, second) = out
        .stdout
        .split_once("rc=")
        .unwrap_or_else(|| panic!("the first run did not end: {out:#?}"));
    assert!(
        !first.contains("RAN"),
        "the first run should fail for want of room: {out:#?}"
    );
    assert!(
        !second.starts_with("0\n"),
        "the first run exited 0 with no room for the copy: {out:#?}"
    );
    let left: Vec<&str> = second.lines().filter(|l| l.starts_with("left ")).collect();
    assert!(
        left.is_empty(),
        "the run that found the disk full left {left:#?}"
    );
    assert!(
        second.lines().last() == Some("RAN"),
        "with room again, the next run should work: {out:#?}"
    );
    // One line for the failure, and the message of the full disk in it.
    let failure = out.stderr.lines().next().unwrap_or_default();
    assert!(
        failure.contains("No space left") || failure.contains("ENOSPC"),
        "the failure should say that the disk is full: {out:#?}"
    );
}
