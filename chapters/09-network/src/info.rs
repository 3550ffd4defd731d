//! `mydocker info`: what this host offers containers.

use anyhow::Result;

use crate::cgroups::Layout;
use crate::limits::{format_cpu_list, online_cpus};

// ANCHOR: info
pub fn info() -> Result<i32> {
    let layout = Layout::detect()?;
    match &layout {
        Layout::V1 {
            unified: Some(unified),
            ..
        } => println!(
            "Cgroups: v1, hybrid (cgroup v2 at {} is left alone)",
            unified.display()
        ),
        Layout::V1 { unified: None, .. } => println!("Cgroups: v1"),
        Layout::V2 { root } => println!("Cgroups: v2, at {}", root.display()),
    }
    println!("Controllers:");
    for (controller, dir) in layout.controllers()? {
        println!("  {controller:<10} {}", dir.display());
    }
    println!("CPUs online: {}", format_cpu_list(&online_cpus()?));
    Ok(0)
}
// ANCHOR_END: info
