// @stage 6
//! `commit` and `export`: a running container's files, as a tarball.
//!
//! The container is frozen while its files are read (`snapshot.rs` finds
//! them, `archive.rs` writes them), so that the image is one moment of it,
//! then thawed: it goes on as if nothing had happened.

pub mod archive;
pub mod snapshot;

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::unistd::Uid;

use crate::cgroups::freezer::Freezer;
use crate::container;
use crate::image;
use crate::images::{self, NewFile};
use crate::layers::Hashing;
use crate::paths::Paths;
use crate::signals;
use snapshot::Root;

// ANCHOR: commit
/// `mydocker commit CONTAINER IMAGE`: the container's files as a new
/// image, published in one step. Prints the image's ID.
pub fn commit(paths: &Paths, container: &str, name: &str) -> Result<i32> {
    image::check_name(name)?;
    let id = running_container(paths, container)?;
    let tarball = image::tarball(paths, &image::canonical(name));
    // What killed commits left (we are not one of them).
    images::sweep(&paths.images());
    let mut new = NewFile::create(&tarball)?;
    // Hashed as it is written: the SHA-256 of the tarball is its ID.
    let mut out = Hashing::new(BufWriter::new(new.file()));
    snapshot(paths, &id, &mut out)?;
    out.flush().context("write the image")?;
    let digest = out.digest();
    drop(out);
    new.publish()?;
    println!("sha256:{digest}");
    Ok(0)
}
// ANCHOR_END: commit

// ANCHOR: export
/// `mydocker export CONTAINER [-o FILE]`: the same tarball as `commit`
/// would make, on standard output or in FILE.
pub fn export(
    paths: &Paths,
    container: &str,
    output: Option<&Path>,
) -> Result<i32> {
    let id = running_container(paths, container)?;
    match output {
        Some(path) => {
            let mut new = NewFile::create(path)?;
            let mut out = BufWriter::new(new.file());
            snapshot(paths, &id, &mut out)?;
            // Dropped, a BufWriter writes its last bytes and forgets any
            // error: flush it ourselves, or a full disk goes unnoticed.
            out.flush()
                .with_context(|| format!("write {}", path.display()))?;
            drop(out);
            new.publish()?;
        }
        None => {
            let stdout = io::stdout();
            if stdout.is_terminal() {
                bail!(
                    "refusing to write a tarball to a terminal: \
                     use -o FILE or redirect the output"
                );
            }
            // Frozen until the reader has taken it all: `export C | less`
            // holds the container still while you read. -o does not.
            let mut out = BufWriter::new(stdout.lock());
            snapshot(paths, &id, &mut out)?;
            out.flush().context("write to standard output")?;
        }
    }
    Ok(0)
}
// ANCHOR_END: export

/// The full ID of the running container that `prefix` names.
fn running_container(paths: &Paths, prefix: &str) -> Result<String> {
    if !Uid::effective().is_root() {
        bail!("reading a container's files needs root: try sudo");
    }
    // Ctrl-C or SIGTERM: stop between two files, thaw, clean up.
    signals::install()?;
    container::find_running(paths, prefix)
}

// ANCHOR: snapshot
/// Freeze the container `id`, write its files to `out`, thaw it.
fn snapshot(paths: &Paths, id: &str, out: &mut impl Write) -> Result<()> {
    let freezer = Freezer::of_container(id)?;
    // One freeze at a time: a second commit must not thaw the container
    // under the first one's copy.
    let _one_at_a_time = container::lock_waiting(&paths.container(id))?;
    let frozen = freezer.freeze()?;
    let root = Root::of(paths, id, &freezer)?;
    // @before 9
    // archive::write_tree(&root.tree, &mut *out)?;
    // @end
    // @stage 9
    // Not the mount points of its /etc/hosts and friends (network/etc.rs).
    let skip = crate::network::etc::mount_points_made(paths, id)?;
    archive::write_tree(&root.tree, &mut *out, &skip)?;
    // @end
    // A container frozen on cgroup v2 can still be killed: then `run`
    // removes its files, and we may have read only some of them.
    root.check_still_running()?;
    drop(frozen);
    Ok(())
}
// ANCHOR_END: snapshot
// @end
