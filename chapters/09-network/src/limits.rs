//! The resource limits of `run`, parsed and checked before anything exists.
//!
//! Everything that can be wrong with `-m 64x` or `--cpuset-cpus 7` is found
//! here, so that a bad option never leaves a half-made container behind.

use std::collections::BTreeSet;

use anyhow::{bail, Context, Result};

use crate::cli::RunArgs;

// ANCHOR: limits
/// The scheduler period that `--cpus` is a share of, in microseconds (the
/// default of both cgroup versions): `--cpus 0.5` means 50 ms of CPU time in
/// every 100 ms.
pub const CPU_PERIOD: u64 = 100_000;

/// The limits of one container, in the units the kernel wants.
// Kept in the container's record: `start` makes its cgroup again.
#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// `-m`: memory in bytes.
    pub memory: Option<u64>,
    /// `--cpus`: microseconds of CPU time per `CPU_PERIOD`.
    pub cpu_quota: Option<u64>,
    /// `--cpu-shares`: relative weight against other cgroups (v1 units).
    pub cpu_shares: Option<u64>,
    /// `--cpuset-cpus`: the CPUs allowed, as a kernel list like `0-2,4`.
    pub cpuset_cpus: Option<String>,
    /// `--pids-limit`: how many processes (and threads) may exist at once.
    pub pids: Option<u64>,
}
// ANCHOR_END: limits

/// Docker's minimum: a smaller container cannot even start its runtime.
const MIN_MEMORY: u64 = 6 << 20;
/// The kernel refuses a CPU quota under 1 ms per period.
const MIN_CPU_QUOTA: u64 = 1_000;
/// The range of v1's `cpu.shares`.
const SHARES: std::ops::RangeInclusive<u64> = 2..=262_144;

impl Limits {
    /// Parse and check the options of `run`. `online` is the set of the
    /// host's online CPUs, which `--cpus` and `--cpuset-cpus` must fit.
    pub fn from_args(args: &RunArgs, online: &BTreeSet<u32>) -> Result<Limits> {
        let mut limits = Limits::default();
        if let Some(text) = &args.memory {
            let bytes =
                parse_size(text).with_context(|| format!("--memory {text}"))?;
            if bytes < MIN_MEMORY {
                bail!("--memory {text}: the minimum is 6m");
            }
            limits.memory = Some(bytes);
        }
        if let Some(text) = &args.cpus {
            let quota =
                parse_cpus(text).with_context(|| format!("--cpus {text}"))?;
            let cpus = online.len() as u64;
            if quota > cpus * CPU_PERIOD {
                bail!(
                    "--cpus {text}: this machine has {cpus} CPU(s): \
                     use a number from 0.01 to {cpus}"
                );
            }
            limits.cpu_quota = Some(quota);
        }
        if let Some(text) = &args.cpu_shares {
            let shares = text
                .parse::<u64>()
                .ok()
                .filter(|n| SHARES.contains(n))
                .with_context(|| {
                    format!(
                        "--cpu-shares {text}: expected a whole number \
                         from 2 to 262144 (1024 is the default weight)"
                    )
                })?;
            limits.cpu_shares = Some(shares);
        }
        if let Some(text) = &args.cpuset_cpus {
            let ranges = parse_cpu_ranges(text)
                .with_context(|| format!("--cpuset-cpus {text}"))?;
            // Check the ranges before expanding them: `0-4294967295` is four
            // billion CPUs. `find` stops at the first CPU that is not
            // online, after at most as many steps as there are online CPUs.
            let offline = ranges
                .iter()
                .filter_map(|&(first, last)| {
                    (first..=last).find(|cpu| !online.contains(cpu))
                })
                .min();
            if let Some(cpu) = offline {
                bail!(
                    "--cpuset-cpus {text}: CPU {cpu} is not online here \
                     (the online CPUs are {})",
                    format_cpu_list(online)
                );
            }
            let wanted = ranges.iter().flat_map(|&(first, last)| first..=last);
            limits.cpuset_cpus = Some(format_cpu_list(&wanted.collect()));
        }
        if let Some(text) = &args.pids_limit {
            let pids =
                text.parse::<u64>().ok().filter(|n| *n > 0).with_context(
                    || {
                        format!(
                            "--pids-limit {text}: expected a whole number \
                         of processes, at least 1"
                        )
                    },
                )?;
            limits.pids = Some(pids);
        }
        Ok(limits)
    }

    /// The controllers these limits need, each with the option that needs it
    /// (for the error when the host does not have one).
    pub fn controllers(&self) -> Vec<(&'static str, &'static str)> {
        let mut needed = Vec::new();
        if self.memory.is_some() {
            needed.push(("memory", "--memory"));
        }
        if self.cpu_quota.is_some() {
            needed.push(("cpu", "--cpus"));
        }
        if self.cpu_shares.is_some() {
            needed.push(("cpu", "--cpu-shares"));
        }
        if self.cpuset_cpus.is_some() {
            needed.push(("cpuset", "--cpuset-cpus"));
        }
        if self.pids.is_some() {
            needed.push(("pids", "--pids-limit"));
        }
        needed
    }
}

// ANCHOR: parse_size
/// `1048576`, `512k`, `64m`, `1g` (either case) → bytes.
pub fn parse_size(text: &str) -> Result<u64> {
    let usage = "expected a size like 64m, 1g or 1048576 (bytes)";
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, ""),
    };
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => bail!("{usage}"),
    };
    let number: u64 = digits.parse().context(usage)?;
    number
        .checked_mul(1 << shift)
        .context("that is more memory than a 64-bit number can count")
}
// ANCHOR_END: parse_size

/// `0.5` → 50000: the CPU time per period, in microseconds.
pub fn parse_cpus(text: &str) -> Result<u64> {
    let cpus: f64 = text
        .trim()
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n > 0.0)
        .context("expected a number of CPUs like 0.5 or 2")?;
    let quota = (cpus * CPU_PERIOD as f64).round();
    if quota < MIN_CPU_QUOTA as f64 {
        bail!("the smallest share of a CPU is 0.01");
    }
    Ok(quota as u64)
}

/// A kernel CPU list like `0-2,4` → its ranges, (0, 2) and (4, 4), not yet
/// expanded. The same format as /sys/devices/system/cpu/online and
/// `cpuset.cpus`.
pub fn parse_cpu_ranges(text: &str) -> Result<Vec<(u32, u32)>> {
    let usage = "expected CPU numbers and ranges like 0-2,4";
    let mut ranges = Vec::new();
    for part in text.trim().split(',') {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        let first: u32 = first.trim().parse().context(usage)?;
        let last: u32 = last.trim().parse().context(usage)?;
        if first > last {
            bail!("{part}: a range goes from low to high");
        }
        ranges.push((first, last));
    }
    Ok(ranges)
}

/// A kernel CPU list like `0-2,4` → {0, 1, 2, 4}: only for lists the kernel
/// wrote, whose ranges are as small as the machine.
pub fn parse_cpu_list(text: &str) -> Result<BTreeSet<u32>> {
    let ranges = parse_cpu_ranges(text)?;
    Ok(ranges
        .into_iter()
        .flat_map(|(first, last)| first..=last)
        .collect())
}

/// {0, 1, 2, 4} → `0-2,4`.
pub fn format_cpu_list(cpus: &BTreeSet<u32>) -> String {
    let mut ranges: Vec<(u32, u32)> = Vec::new();
    for &cpu in cpus {
        match ranges.last_mut() {
            Some((_, last)) if *last + 1 == cpu => *last = cpu,
            _ => ranges.push((cpu, cpu)),
        }
    }
    ranges
        .iter()
        .map(|&(first, last)| {
            if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The CPUs the kernel may schedule on now.
pub fn online_cpus() -> Result<BTreeSet<u32>> {
    let path = "/sys/devices/system/cpu/online";
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read {path}"))?;
    parse_cpu_list(&text).with_context(|| format!("parse {path}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn limits(options: &[&str]) -> Result<Limits> {
        let argv = ["mydocker", "run"]
            .iter()
            .chain(options)
            .chain(&["busybox", "true"]);
        let Command::Run(args) = Cli::try_parse_from(argv)?.command else {
            panic!("not a run command");
        };
        Limits::from_args(&args, &[0, 1].into())
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("100b").unwrap(), 100);
        for bad in [
            "",
            "m",
            "64x",
            "-1m",
            "1.5g",
            "64 m",
            "64mb",
            "99999999999999g",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn cpus_become_a_quota_per_100ms() {
        assert_eq!(parse_cpus("0.5").unwrap(), 50_000);
        assert_eq!(parse_cpus("0.2").unwrap(), 20_000);
        assert_eq!(parse_cpus("2").unwrap(), 200_000);
        assert_eq!(parse_cpus("0.01").unwrap(), 1_000);
        for bad in ["", "0", "-1", "0.001", "nan", "inf", "half"] {
            assert!(parse_cpus(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-2,4\n").unwrap(), [0, 1, 2, 4].into());
        assert_eq!(parse_cpu_list("3").unwrap(), [3].into());
        assert_eq!(format_cpu_list(&[0, 1, 2, 4, 6, 7].into()), "0-2,4,6-7");
        for bad in ["", "a", "2-1", "1,", "-1", "0-"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn options_become_limits() {
        let all = [
            "-m",
            "64m",
            "--cpus",
            "0.5",
            "--cpu-shares",
            "512",
            "--cpuset-cpus",
            "1,0",
            "--pids-limit",
            "20",
        ];
        assert_eq!(
            limits(&all).unwrap(),
            Limits {
                memory: Some(64 << 20),
                cpu_quota: Some(50_000),
                cpu_shares: Some(512),
                cpuset_cpus: Some("0-1".into()),
                pids: Some(20),
            }
        );
        assert_eq!(limits(&[]).unwrap(), Limits::default());
        assert!(limits(&[]).unwrap().controllers().is_empty());
    }

    #[test]
    fn bad_options_say_which_and_why() {
        let message =
            |options: &[&str]| format!("{:#}", limits(options).unwrap_err());
        assert!(message(&["-m", "64x"])
            .starts_with("--memory 64x: expected a size"));
        assert!(message(&["-m", "1m"]).contains("minimum"));
        assert!(message(&["--cpus", "3"]).contains("this machine has 2 CPU(s)"));
        assert!(message(&["--cpus", "x"]).starts_with("--cpus x: expected"));
        assert!(message(&["--cpu-shares", "1"]).contains("from 2 to 262144"));
        assert!(
            message(&["--cpuset-cpus", "0,5"]).contains("CPU 5 is not online")
        );
        assert!(message(&["--pids-limit", "0"]).contains("at least 1"));
    }

    #[test]
    fn a_huge_cpu_range_is_refused_at_once() {
        let message =
            |options: &[&str]| format!("{:#}", limits(options).unwrap_err());
        assert_eq!(
            parse_cpu_ranges("0-4294967295,7").unwrap(),
            [(0, u32::MAX), (7, 7)]
        );
        // Expanded first, each of these would take minutes or abort on
        // running out of memory.
        for (list, offline) in [
            ("0-4294967295", 2u32),
            ("4294967295", 4294967295),
            ("4294967294-4294967295", 4294967294),
            ("1,3-4294967295", 3),
            ("5-4294967295,0-1", 5),
        ] {
            assert_eq!(
                message(&["--cpuset-cpus", list]),
                format!("--cpuset-cpus {list}: CPU {offline} is not online here (the online CPUs are 0-1)")
            );
        }
        assert_eq!(
            limits(&["--cpuset-cpus", "1,0-1,1-1"]).unwrap().cpuset_cpus,
            Some("0-1".into())
        );
    }
}
