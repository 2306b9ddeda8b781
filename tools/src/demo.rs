//! `replog demo`: runs `replog_vault::run_demo` and prints each step as it happens.

use std::path::PathBuf;
use std::sync::Arc;

use replog_io::Storage;
use replog_vault::{DEMO_DISKS, DemoOutcome, DemoStep, run_demo};

use crate::output::human_bytes;
use crate::{CmdResult, EXIT_DAMAGED, EXIT_OK};

/// Runs the demo in `dir` (a fresh temporary directory if `None`).
pub fn run(storage: Arc<dyn Storage>, dir: Option<PathBuf>) -> CmdResult {
    match run_demo(storage, dir, &mut print_step)? {
        DemoOutcome::Damaged { findings } => {
            for finding in findings {
                println!("   damaged: {finding}");
            }
            Ok(EXIT_DAMAGED)
        }
        DemoOutcome::Done {
            seconds,
            points,
            source_bytes,
            vault_bytes,
            vault,
        } => {
            println!(
                "done in {seconds:.1}s: {points} points over {} of disks; the vault takes {} on disk ({})",
                human_bytes(source_bytes),
                human_bytes(vault_bytes),
                vault.display()
            );
            Ok(EXIT_OK)
        }
    }
}

fn print_step(step: DemoStep) {
    match step {
        DemoStep::Started { dir, backend } => {
            println!("demo in {} (I/O backend: {backend})", dir.display());
        }
        DemoStep::Generated => println!(
            "1. generated source disks: {}",
            DEMO_DISKS
                .map(|(n, s, _)| format!("{n} ({})", human_bytes(s)))
                .join(", ")
        ),
        DemoStep::Seeded { vault, point } => println!(
            "2. created vault {} and seeded both disks; point {point} (app-consistent, \"seeded\")",
            vault.display()
        ),
        DemoStep::Cycle {
            cycle,
            disks,
            point,
            kind,
        } => {
            let mut line = format!("3.{cycle} changed the sources and ingested:");
            for (name, changed, stored) in disks {
                line += &format!(
                    " {name} {} changed ({} stored);",
                    human_bytes(changed),
                    human_bytes(stored)
                );
            }
            println!("{line} point {point} ({})", kind.name());
        }
        DemoStep::Verified { files } => println!(
            "4. verify: every checksum and cross-reference of the vault is intact ({files} files)"
        ),
        DemoStep::FailedOver {
            point,
            label,
            seconds,
        } => println!(
            "5.{point} failover to point {point} ({label}) in {seconds:.2}s: both disks match the sources byte for byte"
        ),
    }
}
