//! The built-in `busybox` image, made from the host's static busybox.
//!
//! busybox is one binary that acts as ls, sh, ps and hundreds of other
//! commands ("applets") depending on the name it is called by. One file plus
//! a symlink per applet is a complete, tiny root filesystem, and nothing has
//! to be downloaded.

use std::fs::{self, File};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tar::{Builder, EntryType, Header};

// ANCHOR: consts
/// The name of the built-in image.
pub const IMAGE: &str = "busybox";

/// Where Debian's and Ubuntu's `busybox-static` package installs busybox.
const HOST_BUSYBOX: &str = "/bin/busybox";
// ANCHOR_END: consts

// ANCHOR: create
/// Write the busybox image to `tarball`, atomically: a reader sees either no
/// image or the whole of it.
pub fn create(tarball: &Path) -> Result<()> {
    let binary = fs::read(HOST_BUSYBOX).with_context(|| {
        format!(
            "read {HOST_BUSYBOX}: the busybox image is made from it; \
             install it with `apt-get install busybox-static`"
        )
    })?;
    if is_dynamically_linked(&binary) {
        bail!(
            "{HOST_BUSYBOX} is dynamically linked and would not run \
             inside the image: install `busybox-static`"
        );
    }
    let dir = tarball.parent().context("image path has no directory")?;
    fs::create_dir_all(dir)
        .with_context(|| format!("mkdir {}", dir.display()))?;
    remove_partials_of_the_dead(dir);
    let partial = dir.join(format!(".{IMAGE}.tar.{}", std::process::id()));
    let result = write_image(&partial, &binary).and_then(|()| {
        fs::rename(&partial, tarball)
            .with_context(|| format!("rename to {}", tarball.display()))
    });
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}
// ANCHOR_END: create

// ANCHOR: partials
/// A `run` killed while it wrote the image leaves its `.busybox.tar.PID`
/// behind: remove those whose process no longer exists.
fn remove_partials_of_the_dead(dir: &Path) {
    let prefix = format!(".{IMAGE}.tar.");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(Ok(pid)) = name.strip_prefix(&prefix).map(str::parse) else {
            continue;
        };
        // kill(pid, 0) sends nothing: it only asks whether pid exists.
        if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
            let _ = fs::remove_file(entry.path());
        }
    }
}
// ANCHOR_END: partials

// ANCHOR: layout
fn write_image(path: &Path, binary: &[u8]) -> Result<()> {
    let file = File::create(path)
        .with_context(|| format!("create {}", path.display()))?;
    let mut tar = Builder::new(file);
    for dir in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "dev", "proc",
        "sys", "var", "home",
    ] {
        add(&mut tar, EntryType::Directory, dir, 0o755, b"")?;
    }
    add(&mut tar, EntryType::Directory, "root", 0o700, b"")?;
    // Sticky and writable by all: anyone may add files, only their owner
    // may delete them.
    add(&mut tar, EntryType::Directory, "tmp", 0o1777, b"")?;
    add(&mut tar, EntryType::Regular, "bin/busybox", 0o755, binary)?;
    for applet in applets()? {
        // A relative link, so it still resolves after pivot_root: from
        // usr/bin/env the binary is at ../../bin/busybox.
        let target = if applet.starts_with("bin/") {
            "busybox".to_string()
        } else {
            format!("{}bin/busybox", "../".repeat(applet.matches('/').count()))
        };
        add(
            &mut tar,
            EntryType::Symlink,
            &applet,
            0o777,
            target.as_bytes(),
        )?;
    }
    add(
        &mut tar,
        EntryType::Regular,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\n\
          nobody:x:65534:65534:nobody:/home:/bin/false\n",
    )?;
    add(
        &mut tar,
        EntryType::Regular,
        "etc/group",
        0o644,
        b"root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
    )?;
    add(
        &mut tar,
        EntryType::Regular,
        "etc/hosts",
        0o644,
        b"127.0.0.1\tlocalhost\n::1\tlocalhost\n",
    )?;
    tar.into_inner()
        .and_then(|file| file.sync_all())
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}
// ANCHOR_END: layout

// ANCHOR: applets
/// The applets' paths (`bin/ls`, `usr/bin/env`, ...), from busybox itself.
fn applets() -> Result<Vec<String>> {
    let out = Command::new(HOST_BUSYBOX)
        .arg("--list-full")
        .output()
        .with_context(|| format!("run {HOST_BUSYBOX} --list-full"))?;
    if !out.status.success() {
        bail!("{HOST_BUSYBOX} --list-full failed");
    }
    let list = String::from_utf8_lossy(&out.stdout);
    Ok(list
        .lines()
        .map(|line| line.trim().trim_start_matches('/').to_string())
        .filter(|path| {
            !path.is_empty() && path != "bin/busybox" && !path.contains("..")
        })
        .collect())
}
// ANCHOR_END: applets

// ANCHOR: add
/// Append one entry owned by root. For a symlink, `data` is its target.
fn add(
    tar: &mut Builder<File>,
    kind: EntryType,
    path: &str,
    mode: u32,
    data: &[u8],
) -> Result<()> {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    let result = if kind == EntryType::Symlink {
        header.set_size(0);
        let target = std::str::from_utf8(data).unwrap_or_default();
        tar.append_link(&mut header, path, target)
    } else {
        header.set_size(data.len() as u64);
        tar.append_data(&mut header, path, data)
    };
    result.with_context(|| format!("add {path} to the busybox image"))
}
// ANCHOR_END: add

// ANCHOR: elf
/// Whether an ELF binary names a dynamic loader (a PT_INTERP program header):
/// such a binary needs the host's /lib, which the container does not have.
fn is_dynamically_linked(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let read = |at: usize, len: usize| -> Option<u64> {
        let bytes = elf.get(at..at + len)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0, |acc, b| (acc << 8) | u64::from(*b)),
        )
    };
    // 64-bit little-endian ELF: program headers at e_phoff, e_phnum of them.
    let (Some(phoff), Some(size), Some(count)) =
        (read(0x20, 8), read(0x36, 2), read(0x38, 2))
    else {
        return false;
    };
    (0..count).any(|i| {
        read((phoff + i * size) as usize, 4) == Some(u64::from(PT_INTERP))
    })
}
// ANCHOR_END: elf

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF header with one program header of type `p_type`.
    fn elf_with(p_type: u8) -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[0x20] = 64; // e_phoff
        elf[0x36] = 56; // e_phentsize
        elf[0x38] = 1; // e_phnum
        elf[64] = p_type;
        elf
    }

    #[test]
    fn tells_static_from_dynamic_binaries() {
        assert!(!is_dynamically_linked(&elf_with(1))); // PT_LOAD only
        assert!(is_dynamically_linked(&elf_with(3))); // PT_INTERP

        // This test binary is linked against glibc: dynamic.
        let me = fs::read("/proc/self/exe").unwrap();
        assert!(is_dynamically_linked(&me));
    }
}
