//! Container names: `--name`, or a random readable one like Docker's
//! (`brave_turing`), unique among all containers, running or not.
//!
//! Each name is a symbolic link `names/NAME -> ID`. symlink(2) fails with
//! EEXIST when the name exists: making the link *is* the check, in one
//! step, so two `run --name x` at the same moment cannot both win.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::symlink;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rand::seq::IndexedRandom;

use crate::id;
use crate::paths::Paths;

// ANCHOR: check
/// A name Docker would take: a letter or digit, then letters, digits,
/// `_`, `.` or `-`; at least 2 characters.
pub fn check(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || name.len() < 2 || name.len() > 128 {
        bail!(
            "invalid container name {name:?}: use 2 to 128 letters, digits, \
             '_', '.' or '-', starting with a letter or digit"
        );
    }
    Ok(())
}
// ANCHOR_END: check

// ANCHOR: claim
/// Make `name` container `id`'s. The caller holds `containers/` locked,
/// so no container is being made or removed meanwhile.
pub fn claim(paths: &Paths, name: &str, id: &str) -> Result<()> {
    let link = paths.name(name);
    match symlink(id, &link) {
        Ok(()) => return Ok(()),
        Err(err) if err.kind() == ErrorKind::AlreadyExists => {}
        Err(err) => {
            return Err(err)
                .with_context(|| format!("symlink {}", link.display()))
        }
    }
    let owner = fs::read_link(&link)
        .with_context(|| format!("readlink {}", link.display()))?;
    let owner = owner.to_string_lossy();
    if id::is_id(&owner) && paths.container(&owner).exists() {
        bail!(
            "the name {name:?} is already in use by container {}: \
             remove it (`mydocker rm {name}`) or choose another name",
            id::short(&owner)
        );
    }
    // A name left by an `rm` that was killed half-way: free again.
    fs::remove_file(&link)
        .with_context(|| format!("remove {}", link.display()))?;
    symlink(id, &link).with_context(|| format!("symlink {}", link.display()))
}

/// Give up `name`, if it is still container `id`'s.
pub fn release(paths: &Paths, name: &str, id: &str) -> Result<()> {
    release_link(&paths.name(name), id)
}

/// Remove the name `link`, if it still leads to `id`.
pub fn release_link(link: &Path, id: &str) -> Result<()> {
    match fs::read_link(link) {
        Ok(owner) if owner.as_os_str() == id => fs::remove_file(link)
            .with_context(|| format!("remove {}", link.display())),
        Ok(_) => Ok(()),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(err) => {
            Err(err).with_context(|| format!("readlink {}", link.display()))
        }
    }
}

/// The ID of the container named `name`, if there is one.
pub fn lookup(paths: &Paths, name: &str) -> Option<String> {
    let owner = fs::read_link(paths.name(name)).ok()?;
    let owner = owner.to_str()?;
    (id::is_id(owner) && paths.container(owner).exists())
        .then(|| owner.to_string())
}
// ANCHOR_END: claim

// ANCHOR: random
// ANCHOR: random_name
/// A random name that no container has: `adjective_surname`.
pub fn random(paths: &Paths) -> String {
    let mut rng = rand::rng();
    let pick = |rng: &mut rand::rngs::ThreadRng| {
        let adjective = ADJECTIVES.choose(rng).unwrap_or(&"quiet");
        let person = PEOPLE.choose(rng).unwrap_or(&"thompson");
        format!("{adjective}_{person}")
    };
    // 2,500 names: after a few tries, add a number, as Docker does.
    for attempt in 0..10 {
        let name = match attempt {
            0..5 => pick(&mut rng),
            _ => format!("{}{}", pick(&mut rng), rand::random_range(0..100)),
        };
        // symlink_metadata: the link itself (`exists` would follow it,
        // to `names/ID`, which never exists).
        if fs::symlink_metadata(paths.name(&name)).is_err() {
            return name;
        }
    }
    format!("{}_{}", pick(&mut rng), rand::random::<u32>())
}
// ANCHOR_END: random_name

const ADJECTIVES: [&str; 50] = [
    "agile", "bold", "brave", "bright", "calm", "careful", "cheerful",
    "clever", "curious", "daring", "eager", "earnest", "epic", "fair",
    "fearless", "friendly", "gentle", "glad", "happy", "hardy", "honest",
    "humble", "jolly", "keen", "kind", "lively", "loyal", "lucid", "merry",
    "modest", "nimble", "noble", "patient", "plucky", "polite", "proud",
    "quick", "quiet", "ready", "sharp", "shy", "steady", "sunny", "swift",
    "tidy", "tender", "vivid", "warm", "wise", "witty",
];

/// People who built the systems this book stands on.
const PEOPLE: [&str; 50] = [
    "allen",
    "backus",
    "bellard",
    "bonwick",
    "cerf",
    "corbato",
    "cox",
    "dijkstra",
    "engelbart",
    "feldman",
    "gosling",
    "hamilton",
    "hoare",
    "hopper",
    "joy",
    "kahn",
    "kay",
    "kernighan",
    "knuth",
    "kroah",
    "lamport",
    "liskov",
    "lovelace",
    "mccarthy",
    "mcilroy",
    "menage",
    "metcalfe",
    "minsky",
    "morris",
    "moore",
    "naur",
    "ossanna",
    "perlman",
    "pike",
    "plauger",
    "postel",
    "ritchie",
    "salus",
    "shannon",
    "stallman",
    "stroustrup",
    "tanenbaum",
    "thompson",
    "torvalds",
    "turing",
    "vixie",
    "wall",
    "wirth",
    "wozniak",
    "zimmermann",
];
// ANCHOR_END: random
