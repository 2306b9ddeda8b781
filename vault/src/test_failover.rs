//! Test failover as a library call: materialize a point under a persistent lease, so that
//! replication and retention go on without ever pruning the point, and end it later.

use std::path::{Path, PathBuf};

use replog_format::vault_seed;
use replog_reader::{
    LeaseOptions, MaterializeOptions, MaterializeStats, PointInfo, ReadErrorKind, ViewMode,
    ViewOptions,
};

use crate::choose::{PointChoice, choose};
use crate::error::{Result, VaultError, VaultErrorKind};
use crate::location::Vault;

/// A test failover that was started.
#[derive(Debug)]
pub struct TestFailover {
    /// The point materialized.
    pub point: PointInfo,
    /// Where its disks are (absolute).
    pub out: PathBuf,
    /// What was written.
    pub stats: MaterializeStats,
    /// How the point's view held its extent maps.
    pub view_mode: ViewMode,
    /// Heap bytes of the view's extent maps.
    pub view_memory_bytes: u64,
}

/// A test failover that was ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndedTestFailover {
    /// The point it was of.
    pub point_id: u64,
    /// The images removed.
    pub removed: Vec<PathBuf>,
}

impl Vault {
    /// Materializes the point `choice` names into `out` (made absolute), synced, under a
    /// persistent lease that keeps retention from pruning it until
    /// [`Vault::end_test_failover`]. Only one test failover is active at a time.
    pub fn start_test_failover(&self, choice: &PointChoice, out: &Path) -> Result<TestFailover> {
        self.start_test_failover_with(choice, out, &ViewOptions::default())
    }

    /// [`Vault::start_test_failover`], building the point's view as `view` says.
    pub fn start_test_failover_with(
        &self,
        choice: &PointChoice,
        out: &Path,
        view: &ViewOptions,
    ) -> Result<TestFailover> {
        let view_opts = view;
        let out = absolute(out);
        let opts = LeaseOptions {
            purpose: "test-failover".to_owned(),
            persistent: true,
            detail: out.display().to_string(),
        };
        let shown_as = self.dir().display().to_string();
        let leased = replog_reader::Vault::open_leased(
            self.storage().clone(),
            self.dir(),
            &opts,
            |v| choose(v, &shown_as, choice).cloned(),
        )
        .map_err(|e: VaultError| {
            let held = e
                .read_error()
                .is_some_and(|r| r.kind() == ReadErrorKind::AlreadyExists);
            if held {
                VaultError::new(
                    VaultErrorKind::TestFailoverActive,
                    format!(
                        "{shown_as}: a test failover is already active; end it with `replog test-failover {shown_as} --cleanup`"
                    ),
                )
            } else {
                e
            }
        })?;
        let view = leased.vault.view_with(&leased.point, view_opts)?;
        let opts = MaterializeOptions {
            force: false,
            sync: true,
            ..MaterializeOptions::default()
        };
        let stats = match replog_reader::materialize(&view, &out, &opts) {
            Ok(stats) => stats,
            Err(e) => {
                leased.lease.release()?;
                return Err(e.into());
            }
        };
        // The lease stays: it is persistent, and its file records the test failover.
        drop(leased.lease);
        Ok(TestFailover {
            point: leased.point,
            out,
            stats,
            view_mode: view.mode(),
            view_memory_bytes: view.memory_bytes(),
        })
    }

    /// Ends the active test failover: removes its images (and its directory, when nothing else
    /// is in it) and releases its lease. `None` when none is active.
    pub fn end_test_failover(&self) -> Result<Option<EndedTestFailover>> {
        let storage = self.storage();
        let vault = self.snapshot()?;
        let seed = vault_seed(&vault.header().vault_id);
        let Some(record) = replog_reader::test_failover_lease(storage.as_ref(), self.dir(), seed)?
        else {
            return Ok(None);
        };
        let out = PathBuf::from(&record.detail);
        let mut removed = Vec::new();
        for d in vault.disks().iter().filter(|d| d.added_lsn <= record.lsn) {
            let path = out.join(format!("{}.raw", d.name));
            match storage.remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(VaultError::new(
                        VaultErrorKind::Io,
                        format!(
                            "{}: cannot remove the test failover's image: {e}",
                            path.display()
                        ),
                    )
                    .in_file(path));
                }
            }
        }
        // The directory goes too when nothing else is in it.
        let _ = std::fs::remove_dir(&out);
        replog_reader::release_test_failover(storage.as_ref(), self.dir())?;
        Ok(Some(EndedTestFailover {
            point_id: record.point_id,
            removed,
        }))
    }
}

/// `p`, joined to the current directory when relative (as given: `./x` stays `CWD/./x`).
fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}
