//! cgroup v2: one directory for the container in the unified tree.
//!
//! In v2 a parent hands controllers down: a controller's files appear in a
//! child only once the parent lists it in its `cgroup.subtree_control`. And
//! a cgroup that hands controllers down may not hold processes itself (the
//! "no internal processes" rule; the root is exempt). So the controllers are
//! enabled in the ancestors, the root and `mydocker`, never in the
//! container's own directory, which holds its processes.

use std::path::Path;

use anyhow::{bail, Result};

use super::{read, Plan, Step, PARENT};
use crate::limits::{Limits, CPU_PERIOD};

/// The controllers mydocker enables for its containers, where available.
const CONTROLLERS: [&str; 4] = ["cpuset", "cpu", "memory", "pids"];

/// The controllers the host offers at the root of the tree.
pub fn available(root: &Path) -> Result<Vec<String>> {
    let text = read(&root.join("cgroup.controllers"))?;
    Ok(text.split_whitespace().map(String::from).collect())
}

// ANCHOR: plan
// ANCHOR: plan_dirs
pub fn plan(
    root: &Path,
    available: &[String],
    id: &str,
    limits: &Limits,
) -> Result<Plan> {
    for (controller, option) in limits.controllers() {
        if !available.iter().any(|c| c == controller) {
            bail!(
                "the {controller} controller is not available in {} \
                 (it has: {}), so {option} cannot be enforced",
                root.join("cgroup.controllers").display(),
                available.join(" ")
            );
        }
    }
    let enable: Vec<String> = CONTROLLERS
        .iter()
        .filter(|c| available.iter().any(|a| a == *c))
        // No limit, no controller: a cgroup can be frozen without any (a
        // root that holds processes, in a container, refuses controllers).
        .filter(|_| !limits.controllers().is_empty())
        .map(|c| format!("+{c}"))
        .collect();
    let enable = enable.join(" "); // "+cpuset +cpu +memory +pids"
    let parent = root.join(PARENT);
    let leaf = parent.join(id);

    let mut steps = Vec::new();
    for ancestor in [root, parent.as_path()] {
        if ancestor != root {
            steps.push(Step::Mkdir(ancestor.to_path_buf()));
        }
        if !enable.is_empty() {
            let control = ancestor.join("cgroup.subtree_control");
            steps.push(Step::Write(control, enable.clone()));
        }
    }
    steps.push(Step::Mkdir(leaf.clone()));
    // ANCHOR_END: plan_dirs
    // ANCHOR: plan_limits
    if let Some(bytes) = limits.memory {
        steps.push(Step::Write(leaf.join("memory.max"), bytes.to_string()));
        // No swap on top of the limit (the file exists only with swap
        // accounting): the limit really stops the container.
        steps.push(Step::WriteIfExists(
            leaf.join("memory.swap.max"),
            "0".into(),
        ));
    }
    if let Some(quota) = limits.cpu_quota {
        // One file for both: "QUOTA PERIOD", in microseconds.
        let value = format!("{quota} {CPU_PERIOD}");
        steps.push(Step::Write(leaf.join("cpu.max"), value));
    }
    if let Some(shares) = limits.cpu_shares {
        steps.push(Step::Write(
            leaf.join("cpu.weight"),
            weight(shares).to_string(),
        ));
    }
    if let Some(cpus) = &limits.cpuset_cpus {
        steps.push(Step::Write(leaf.join("cpuset.cpus"), cpus.clone()));
        // v2 has no empty-cpuset trap (empty means "the parent's"), but the
        // memory nodes belong with the CPUs: take those the parent has.
        steps.push(Step::Copy {
            from: parent.join("cpuset.mems.effective"),
            to: leaf.join("cpuset.mems"),
        });
    }
    if let Some(pids) = limits.pids {
        steps.push(Step::Write(leaf.join("pids.max"), pids.to_string()));
    }
    Ok(Plan {
        steps,
        leaves: vec![leaf],
        parents: vec![parent],
    })
}
// ANCHOR_END: plan_limits
// ANCHOR_END: plan

// ANCHOR: weight
/// v1's `cpu.shares` (2 to 262144, default 1024) on v2's `cpu.weight` scale
/// (1 to 10000, default 100), with the formula runc and Docker use.
pub fn weight(shares: u64) -> u64 {
    1 + ((shares - 2) * 9999) / 262_142
}
// ANCHOR_END: weight

#[cfg(test)]
mod tests {
    use super::super::tests::{fake_files, forget_files, value};
    use super::super::Cgroup;
    use super::*;
    use nix::unistd::Pid;
    use std::path::PathBuf;

    const ID: &str = "c0ffee";
    const ALL: &str = "cpuset cpu io memory hugetlb pids rdma misc\n";

    fn available(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    fn w(path: &str, value: &str) -> Step {
        Step::Write(PathBuf::from(path), value.into())
    }

    #[test]
    fn shares_map_onto_weights() {
        assert_eq!(weight(2), 1);
        assert_eq!(weight(512), 20);
        assert_eq!(weight(1024), 39);
        assert_eq!(weight(262_144), 10_000);
    }

    #[test]
    fn enables_controllers_in_the_ancestors_then_writes_the_limits() {
        let limits = Limits {
            memory: Some(32 << 20),
            cpu_quota: Some(20_000),
            cpu_shares: Some(512),
            cpuset_cpus: Some("0".into()),
            pids: Some(20),
        };
        let plan =
            plan(Path::new("/cg"), &available(ALL), ID, &limits).unwrap();
        let enable = "+cpuset +cpu +memory +pids";
        assert_eq!(
            plan.steps,
            [
                w("/cg/cgroup.subtree_control", enable),
                Step::Mkdir("/cg/mydocker".into()),
                w("/cg/mydocker/cgroup.subtree_control", enable),
                Step::Mkdir("/cg/mydocker/c0ffee".into()),
                w("/cg/mydocker/c0ffee/memory.max", "33554432"),
                Step::WriteIfExists(
                    "/cg/mydocker/c0ffee/memory.swap.max".into(),
                    "0".into()
                ),
                w("/cg/mydocker/c0ffee/cpu.max", "20000 100000"),
                w("/cg/mydocker/c0ffee/cpu.weight", "20"),
                w("/cg/mydocker/c0ffee/cpuset.cpus", "0"),
                Step::Copy {
                    from: "/cg/mydocker/cpuset.mems.effective".into(),
                    to: "/cg/mydocker/c0ffee/cpuset.mems".into()
                },
                w("/cg/mydocker/c0ffee/pids.max", "20"),
            ]
        );
        assert_eq!(plan.leaves, [PathBuf::from("/cg/mydocker/c0ffee")]);
        assert_eq!(plan.parents, [PathBuf::from("/cg/mydocker")]);
    }

    #[test]
    fn enables_only_what_the_host_has() {
        let plan = plan(
            Path::new("/cg"),
            &available("memory pids"),
            ID,
            // (From stage 6, no limit enables no controller.)
            &Limits {
                pids: Some(10),
                ..Limits::default()
            },
        );
        assert_eq!(
            plan.unwrap().steps[..3],
            [
                w("/cg/cgroup.subtree_control", "+memory +pids"),
                Step::Mkdir("/cg/mydocker".into()),
                w("/cg/mydocker/cgroup.subtree_control", "+memory +pids"),
            ]
        );
    }

    #[test]
    fn a_missing_controller_is_refused_by_name() {
        let limits = Limits {
            cpu_quota: Some(50_000),
            ..Limits::default()
        };
        let err =
            plan(Path::new("/cg"), &available("memory pids"), ID, &limits)
                .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the cpu controller is not available in /cg/cgroup.controllers (it has: memory pids), so --cpus cannot be enforced"
        );
    }

    #[test]
    fn creates_joins_and_removes_in_a_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fake_files(
            root,
            &[("cgroup.controllers", ALL), ("cgroup.subtree_control", "")],
        );
        let parent = root.join("mydocker");
        fake_files(
            &parent,
            &[
                ("cgroup.subtree_control", ""),
                ("cpuset.mems.effective", "0\n"),
            ],
        );
        let leaf = parent.join(ID);
        let files = [
            "cgroup.procs",
            "cgroup.subtree_control",
            "memory.max",
            "memory.swap.max",
            "cpuset.cpus",
            "cpuset.mems",
            "pids.max",
        ];
        fake_files(&leaf, &files.map(|f| (f, "")));

        let limits = Limits {
            memory: Some(64 << 20),
            cpuset_cpus: Some("1".into()),
            pids: Some(100),
            ..Limits::default()
        };
        let plan = super::super::Plan::new(
            &super::super::Layout::V2 {
                root: root.to_path_buf(),
            },
            ID,
            &limits,
        )
        .unwrap();
        let mut cgroup = Cgroup::create(plan).unwrap();
        cgroup.add(Pid::from_raw(4242)).unwrap();

        let enable = "+cpuset +cpu +memory +pids";
        assert_eq!(value(root.join("cgroup.subtree_control")), enable);
        assert_eq!(value(parent.join("cgroup.subtree_control")), enable);
        // Never in the leaf: it holds the container's processes.
        assert_eq!(value(leaf.join("cgroup.subtree_control")), "");
        assert_eq!(value(leaf.join("memory.max")), "67108864");
        assert_eq!(value(leaf.join("memory.swap.max")), "0");
        assert_eq!(value(leaf.join("cpuset.cpus")), "1");
        assert_eq!(value(leaf.join("cpuset.mems")), "0");
        assert_eq!(value(leaf.join("pids.max")), "100");
        assert_eq!(value(leaf.join("cgroup.procs")), "4242");

        forget_files(&leaf);
        forget_files(&parent);
        cgroup.remove().unwrap();
        assert!(!parent.exists());
        assert!(root.exists());
    }
}
