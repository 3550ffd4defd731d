//! cgroup v1: a directory for the container in each hierarchy.
//!
//! mydocker makes the container's directory in the hierarchies of the
//! limits it asks for (cpu, cpuset, memory, pids), and only there: each
//! directory costs a few system calls to make and to remove, and a
//! process moved into it an RCU grace period. (Docker makes one in every
//! hierarchy, to account for each container everywhere.)
//! One exception, from stage 6: every container also gets a directory in
//! the freezer hierarchy, limits or not, which `commit` uses to pause it.

use std::path::Path;

use anyhow::{bail, Result};

use super::freezer::FREEZER;
use super::{Hierarchy, Plan, Step, PARENT};
use crate::limits::{Limits, CPU_PERIOD};


// ANCHOR: plan
// ANCHOR: plan_dirs
pub fn plan(
    hierarchies: &[Hierarchy],
    id: &str,
    limits: &Limits,
) -> Result<Plan> {
    for (controller, option) in limits.controllers() {
        if !hierarchies.iter().any(|h| h.has(controller)) {
            bail!(
                "the {controller} controller is not mounted, \
                 so {option} cannot be enforced"
            );
        }
    }
    let mut plan = Plan::default();
    for hierarchy in hierarchies {
        // The freezer's too: commit freezes the container there.
        let needed = hierarchy.has(FREEZER)
            || limits.controllers().iter().any(|(c, _)| hierarchy.has(c));
        if !needed {
            continue;
        }
        let parent = hierarchy.mount.join(PARENT);
        let leaf = parent.join(id);
        let steps = &mut plan.steps;
        steps.push(Step::Mkdir(parent.clone()));
        if hierarchy.has("cpuset") {
            // The cpuset trap: a new v1 cpuset has no CPUs and no memory
            // nodes, and the kernel refuses to move a process into an empty
            // cpuset (ENOSPC, "No space left on device"). Fill both in from
            // the level above, for our parent as for the container.
            copy(steps, &hierarchy.mount, &parent, "cpuset.cpus");
            copy(steps, &hierarchy.mount, &parent, "cpuset.mems");
        }
        steps.push(Step::Mkdir(leaf.clone()));
        if hierarchy.has("cpuset") {
            match &limits.cpuset_cpus {
                Some(cpus) => steps
                    .push(Step::Write(leaf.join("cpuset.cpus"), cpus.clone())),
                None => copy(steps, &parent, &leaf, "cpuset.cpus"),
            }
            copy(steps, &parent, &leaf, "cpuset.mems");
        }
        // ANCHOR_END: plan_dirs
        // ANCHOR: plan_limits
        if let (true, Some(bytes)) = (hierarchy.has("memory"), limits.memory) {
            steps.push(Step::Write(
                leaf.join("memory.limit_in_bytes"),
                bytes.to_string(),
            ));
            // memory+swap = memory: no swap on top of the limit, so the
            // limit really stops the container. (Docker allows as much swap
            // again by default.) The file exists only with swap accounting.
            steps.push(Step::WriteIfExists(
                leaf.join("memory.memsw.limit_in_bytes"),
                bytes.to_string(),
            ));
        }
        if hierarchy.has("cpu") {
            if let Some(quota) = limits.cpu_quota {
                // The quota counts against the period: set the period first.
                steps.push(Step::Write(
                    leaf.join("cpu.cfs_period_us"),
                    CPU_PERIOD.to_string(),
                ));
                steps.push(Step::Write(
                    leaf.join("cpu.cfs_quota_us"),
                    quota.to_string(),
                ));
            }
            if let Some(shares) = limits.cpu_shares {
                steps.push(Step::Write(
                    leaf.join("cpu.shares"),
                    shares.to_string(),
                ));
            }
        }
        if let (true, Some(pids)) = (hierarchy.has("pids"), limits.pids) {
            steps.push(Step::Write(leaf.join("pids.max"), pids.to_string()));
        }
        plan.leaves.push(leaf);
        plan.parents.push(parent);
    }
    Ok(plan)
}
// ANCHOR_END: plan_limits
// ANCHOR_END: plan

fn copy(steps: &mut Vec<Step>, from: &Path, to: &Path, file: &str) {
    steps.push(Step::Copy {
        from: from.join(file),
        to: to.join(file),
    });
}

#[cfg(test)]
mod tests {
    use super::super::tests::{fake_files, forget_files, value, HYBRID};
    use super::super::{Cgroup, Layout};
    use super::*;
    use nix::unistd::Pid;
    use std::path::PathBuf;

    const ID: &str = "c0ffee";

    fn path(text: &str) -> PathBuf {
        PathBuf::from(text)
    }

    fn hierarchies(root: &Path) -> Vec<Hierarchy> {
        let text = HYBRID.replace("/sys/fs/cgroup", &root.to_string_lossy());
        match Layout::from_mountinfo(&text).unwrap() {
            Layout::V1 { hierarchies, .. } => hierarchies,
            other => panic!("expected v1, got {other:?}"),
        }
    }

    fn every_limit() -> Limits {
        Limits {
            memory: Some(32 << 20),
            cpu_quota: Some(20_000),
            cpu_shares: Some(512),
            cpuset_cpus: Some("1".into()),
            pids: Some(20),
        }
    }

    #[test]
    fn writes_every_limit_in_order() {
        let plan =
            plan(&hierarchies(Path::new("/cg")), ID, &every_limit()).unwrap();
        let w = |p: &str, v: &str| Step::Write(path(p), v.into());
        let c = |from: &str, to: &str| Step::Copy {
            from: path(from),
            to: path(to),
        };
        let m = |p: &str| Step::Mkdir(path(p));
        assert_eq!(
            plan.steps,
            [
                m("/cg/cpu/mydocker"),
                m("/cg/cpu/mydocker/c0ffee"),
                w("/cg/cpu/mydocker/c0ffee/cpu.cfs_period_us", "100000"),
                w("/cg/cpu/mydocker/c0ffee/cpu.cfs_quota_us", "20000"),
                w("/cg/cpu/mydocker/c0ffee/cpu.shares", "512"),
                m("/cg/cpuset/mydocker"),
                c("/cg/cpuset/cpuset.cpus", "/cg/cpuset/mydocker/cpuset.cpus"),
                c("/cg/cpuset/cpuset.mems", "/cg/cpuset/mydocker/cpuset.mems"),
                m("/cg/cpuset/mydocker/c0ffee"),
                w("/cg/cpuset/mydocker/c0ffee/cpuset.cpus", "1"),
                c(
                    "/cg/cpuset/mydocker/cpuset.mems",
                    "/cg/cpuset/mydocker/c0ffee/cpuset.mems"
                ),
                m("/cg/memory/mydocker"),
                m("/cg/memory/mydocker/c0ffee"),
                w(
                    "/cg/memory/mydocker/c0ffee/memory.limit_in_bytes",
                    "33554432"
                ),
                Step::WriteIfExists(
                    path("/cg/memory/mydocker/c0ffee/memory.memsw.limit_in_bytes"),
                    "33554432".into()
                ),
                m("/cg/pids/mydocker"),
                m("/cg/pids/mydocker/c0ffee"),
                w("/cg/pids/mydocker/c0ffee/pids.max", "20"),
            ]
        );
        // cpuacct is not one of ours; name=systemd is not a hierarchy.
        let leaves: Vec<PathBuf> = ["cpu", "cpuset", "memory", "pids"]
            .iter()
            .map(|c| path(&format!("/cg/{c}/mydocker/c0ffee")))
            .collect();
        assert_eq!(plan.leaves, leaves);
    }

    #[test]
    fn only_the_hierarchies_of_the_limits_asked_for() {
        let hierarchies = hierarchies(Path::new("/cg"));
        let none = plan(&hierarchies, ID, &Limits::default()).unwrap();
        assert!(none.steps.is_empty() && none.leaves.is_empty());
        let memory = Limits {
            memory: Some(32 << 20),
            ..Limits::default()
        };
        let memory = plan(&hierarchies, ID, &memory).unwrap();
        assert_eq!(memory.leaves, [path("/cg/memory/mydocker/c0ffee")]);
    }

    #[test]
    fn a_missing_controller_is_refused_by_name() {
        let mut hierarchies = hierarchies(Path::new("/cg"));
        hierarchies.retain(|h| !h.has("pids"));
        let limits = Limits {
            pids: Some(20),
            ..Limits::default()
        };
        let err = plan(&hierarchies, ID, &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the pids controller is not mounted, so --pids-limit cannot be enforced"
        );
        // Without that limit, a missing hierarchy is simply not used.
        assert!(plan(&hierarchies, ID, &Limits::default()).is_ok());
    }

    #[test]
    fn creates_joins_and_removes_in_a_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let hierarchies = hierarchies(root);
        // What the kernel would show: the root's own cpuset, and the
        // control files of the directories mkdir makes.
        fake_files(
            &root.join("cpuset"),
            &[("cpuset.cpus", "0-1\n"), ("cpuset.mems", "0\n")],
        );
        let cpuset = [("cpuset.cpus", ""), ("cpuset.mems", "")];
        fake_files(&root.join("cpuset/mydocker"), &cpuset);
        fake_files(&root.join("cpuset/mydocker/c0ffee"), &cpuset);
        let procs = [("cgroup.procs", "")];
        for c in ["cpu", "cpuset", "memory", "pids"] {
            fake_files(&root.join(c).join("mydocker/c0ffee"), &procs);
        }
        let leaf = |c: &str| root.join(c).join("mydocker/c0ffee");
        fake_files(
            &leaf("cpu"),
            &[
                ("cpu.cfs_period_us", ""),
                ("cpu.cfs_quota_us", ""),
                ("cpu.shares", ""),
            ],
        );
        // No memory.memsw.limit_in_bytes: swap accounting is off.
        fake_files(&leaf("memory"), &[("memory.limit_in_bytes", "")]);
        fake_files(&leaf("pids"), &[("pids.max", "")]);

        // (From stage 4, a container is in a cpuset for --cpuset-cpus only.)
        let limits = Limits {
            cpuset_cpus: Some("0-1".into()),
            ..every_limit()
        };
        let mut cgroup =
            Cgroup::create(plan(&hierarchies, ID, &limits).unwrap()).unwrap();
        cgroup.add(Pid::from_raw(4242)).unwrap();

        assert_eq!(value(root.join("cpuset/mydocker/cpuset.cpus")), "0-1");
        assert_eq!(value(root.join("cpuset/mydocker/cpuset.mems")), "0");
        assert_eq!(value(leaf("cpuset").join("cpuset.cpus")), "0-1");
        assert_eq!(value(leaf("cpuset").join("cpuset.mems")), "0");
        assert_eq!(value(leaf("cpu").join("cpu.cfs_quota_us")), "20000");
        assert_eq!(
            value(leaf("memory").join("memory.limit_in_bytes")),
            "33554432"
        );
        assert!(!leaf("memory").join("memory.memsw.limit_in_bytes").exists());
        assert_eq!(value(leaf("pids").join("pids.max")), "20");
        for c in ["cpu", "cpuset", "memory", "pids"] {
            assert_eq!(value(leaf(c).join("cgroup.procs")), "4242", "{c}");
        }
        assert!(!root.join("cpuacct/mydocker").exists());

        for c in ["cpu", "cpuset", "memory", "pids"] {
            forget_files(&leaf(c));
            forget_files(&root.join(c).join("mydocker"));
        }
        cgroup.remove().unwrap();
        for c in ["cpu", "cpuset", "memory", "pids"] {
            assert!(!root.join(c).join("mydocker").exists(), "{c}");
        }
    }
}
