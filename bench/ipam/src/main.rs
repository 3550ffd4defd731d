//! How long mydocker's IPAM takes in a /16, the largest subnet a user is
//! likely to give: every address allocated one by one, as 65,533 `run`s
//! would (each allocation a locked load and save of the whole bitmap),
//! and one allocation with 10 and with 60,000 addresses taken.
//!
//! ```text
//! bench-ipam DIR [--smoke] [--json FILE]
//! ```
//!
//! DIR must not exist: the IPAM's files are made there (the caller removes
//! it). `--smoke` fills a /22 instead, for a quick check. bench/network
//! builds and runs it; see bench/README.md.

// The real module, not a copy: ipam.rs uses std, anyhow, ipnetwork and
// nix only (no `crate::`), so that this crate can compile it as it is.
#[allow(dead_code)]
#[path = "../../../mydocker/src/network/ipam.rs"]
mod ipam;

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use ipnetwork::Ipv4Network;

use ipam::Ipam;

/// What to measure: the subnet, how many addresses are taken when one
/// allocation is timed on its own, and how many times it is timed.
struct Plan {
    subnet: Ipv4Network,
    gateway: Ipv4Addr,
    taken: [usize; 2],
    rounds: usize,
}

const FULL: Plan = Plan {
    subnet: net(10, 123, 16),
    gateway: Ipv4Addr::new(10, 123, 0, 1),
    taken: [10, 60_000],
    rounds: 1000,
};

const SMOKE: Plan = Plan {
    subnet: net(10, 123, 22),
    gateway: Ipv4Addr::new(10, 123, 0, 1),
    taken: [10, 1000],
    rounds: 50,
};

const fn net(a: u8, b: u8, prefix: u8) -> Ipv4Network {
    match Ipv4Network::new_checked(Ipv4Addr::new(a, b, 0, 0), prefix) {
        Some(net) => net,
        None => panic!("a bad subnet in the plan"),
    }
}

/// The times of one kind of operation.
struct Sample {
    what: String,
    times: Vec<Duration>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench-ipam: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let (dir, smoke, json) = parse_args()?;
    let plan = if smoke { SMOKE } else { FULL };
    let subnet = plan.subnet;
    // Every address but the network's, the gateway's and the broadcast.
    let capacity = (1usize << (32 - subnet.prefix())) - 3;

    fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let ipam = Ipam::new(&dir, subnet);
    ipam.create(plan.gateway)?;
    let empty = bitmap(&dir)?;

    // Fill the subnet, lowest address first, timing each allocation; on
    // the way, when 10 (and 60,000) are taken, time one allocation on its
    // own many times (allocate, then release the same address).
    let mut fill = Vec::with_capacity(capacity);
    let mut alone = Vec::new();
    let mut ips: Vec<Ipv4Addr> = Vec::with_capacity(capacity);
    for taken in 0..capacity {
        if plan.taken.contains(&taken) {
            alone.extend(one_at_a_time(&ipam, taken, plan.rounds)?);
        }
        let start = Instant::now();
        let ip = ipam.allocate()?;
        fill.push(start.elapsed());
        if let Some(&last) = ips.last() {
            ensure!(ip > last, "allocate gave {ip} after {last}");
        }
        ips.push(ip);
    }

    // Full: one clear error, and as fast.
    let start = Instant::now();
    let Err(full) = ipam.allocate() else {
        bail!("allocate in a full {subnet} gave an address")
    };
    let refused = start.elapsed();

    // Every address back, and the bitmap is as it was made.
    let mut release = Vec::with_capacity(capacity);
    for &ip in &ips {
        let start = Instant::now();
        let was_taken = ipam.release(ip)?;
        release.push(start.elapsed());
        ensure!(was_taken, "release({ip}): it was not allocated");
    }
    ensure!(
        bitmap(&dir)? == empty,
        "the bitmap is not empty again after every release"
    );

    let n = fill.len();
    let first = fill[..n.min(1000)].to_vec();
    let last = fill[n.saturating_sub(1000)..].to_vec();
    let total: Duration = fill.iter().sum();
    let mut samples = vec![
        Sample {
            what: format!("allocate, one by one until {subnet} is full"),
            times: fill,
        },
        Sample {
            what: format!("… the first {}", count(first.len())),
            times: first,
        },
        Sample {
            what: format!("… the last {}", count(last.len())),
            times: last,
        },
    ];
    samples.extend(alone);
    samples.push(Sample {
        what: format!("allocate in the full {subnet} (refused)"),
        times: vec![refused],
    });
    samples.push(Sample {
        what: "release, one by one until it is empty".into(),
        times: release,
    });

    let (first, last) = (median(&samples[1].times), median(&samples[2].times));
    println!("{}", table(&samples));
    println!();
    println!(
        "Every address of {subnet} ({}) allocated in {} (target: linear, \
         under 1 s (issue 15): {}); the last 1,000 allocations took {:.2} × the first \
         1,000 (medians).",
        count(n),
        human(total),
        if total < Duration::from_secs(1) && last < first * 2 {
            "met"
        } else {
            "missed"
        },
        last.as_secs_f64() / first.as_secs_f64()
    );
    println!("In the full subnet: \"{full:#}\".");
    if let Some(path) = json {
        fs::write(&path, to_json(&subnet, &samples, total))
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// `rounds` times: one allocation timed (with `taken` addresses taken),
/// then its release timed, so that the next round starts as this one did.
fn one_at_a_time(
    ipam: &Ipam,
    taken: usize,
    rounds: usize,
) -> Result<[Sample; 2]> {
    let mut allocate = Vec::with_capacity(rounds);
    let mut release = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        let ip = ipam.allocate()?;
        allocate.push(start.elapsed());
        let start = Instant::now();
        ensure!(ipam.release(ip)?, "release({ip}): it was not allocated");
        release.push(start.elapsed());
    }
    Ok([
        Sample {
            what: format!("allocate, with {} taken", count(taken)),
            times: allocate,
        },
        Sample {
            what: format!("release, with {} taken", count(taken)),
            times: release,
        },
    ])
}

fn parse_args() -> Result<(PathBuf, bool, Option<PathBuf>)> {
    let usage = "usage: bench-ipam DIR [--smoke] [--json FILE]";
    let mut dir = None;
    let mut smoke = false;
    let mut json = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--smoke") => smoke = true,
            Some("--json") => match args.next() {
                Some(path) => json = Some(PathBuf::from(path)),
                None => bail!("--json needs a file: {usage}"),
            },
            Some("-h" | "--help") => {
                println!("{usage}");
                std::process::exit(0);
            }
            Some(s) if s.starts_with('-') => {
                bail!("unknown option {s}: {usage}")
            }
            _ if dir.is_none() => dir = Some(PathBuf::from(arg)),
            _ => bail!("one DIR only: {usage}"),
        }
    }
    let dir = dir.with_context(|| usage.to_string())?;
    Ok((dir, smoke, json))
}

/// The bitmap's file, as the IPAM keeps it (see stage9-design: DIR/addresses).
fn bitmap(dir: &Path) -> Result<Vec<u8>> {
    let path = dir.join("addresses");
    fs::read(&path).with_context(|| format!("read {}", path.display()))
}

fn median(times: &[Duration]) -> Duration {
    percentile(times, 50.0)
}

/// The nearest-rank percentile.
fn percentile(times: &[Duration], p: f64) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A markdown table, one sample a row.
fn table(samples: &[Sample]) -> String {
    let mut out = String::from(
        "| | operations | total | median | 99th percentile | max |\n\
         | --- | ---: | ---: | ---: | ---: | ---: |",
    );
    for s in samples {
        let total: Duration = s.times.iter().sum();
        let max = s.times.iter().max().copied().unwrap_or_default();
        out += &format!(
            "\n| {} | {} | {} | {} | {} | {} |",
            s.what,
            count(s.times.len()),
            human(total),
            human(median(&s.times)),
            human(percentile(&s.times, 99.0)),
            human(max)
        );
    }
    out
}

/// 65533 as "65,533".
fn count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Three significant digits, in µs, ms or s.
fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    let (value, unit) = if s < 1e-3 {
        (s * 1e6, "µs")
    } else if s < 1.0 {
        (s * 1e3, "ms")
    } else {
        (s, "s")
    };
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.decimals$} {unit}")
}

/// The same figures as JSON (seconds), for tools that plot. By hand:
/// a few numbers are not worth a serializer.
fn to_json(
    subnet: &Ipv4Network,
    samples: &[Sample],
    total: Duration,
) -> String {
    let rows: Vec<String> = samples
        .iter()
        .map(|s| {
            let sum: Duration = s.times.iter().sum();
            let max = s.times.iter().max().copied().unwrap_or_default();
            format!(
                "    {{\"what\": \"{}\", \"operations\": {}, \"total\": {:e}, \
                 \"median\": {:e}, \"p99\": {:e}, \"max\": {:e}}}",
                s.what.replace('"', "'"),
                s.times.len(),
                sum.as_secs_f64(),
                median(&s.times).as_secs_f64(),
                percentile(&s.times, 99.0).as_secs_f64(),
                max.as_secs_f64()
            )
        })
        .collect();
    format!(
        "{{\n  \"subnet\": \"{subnet}\",\n  \"fill_total\": {:e},\n  \
         \"results\": [\n{}\n  ]\n}}\n",
        total.as_secs_f64(),
        rows.join(",\n")
    )
}
