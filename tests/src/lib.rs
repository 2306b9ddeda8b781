//! Shared helpers for replog's end-to-end, model and fault tests: the list of storage backends
//! every shared test runs against, and a model of the disks to check the vault against.

use std::path::PathBuf;
use std::sync::Arc;

use replog_io::Storage;
use replog_io::sim::SimStorage;

/// A backend under test and a vault directory on it.
#[derive(Debug)]
pub struct Backend {
    /// "sync", "uring" or "sim".
    pub name: &'static str,
    /// The storage.
    pub storage: Arc<dyn Storage>,
    /// The simulator, when this is the simulated backend.
    pub sim: Option<Arc<SimStorage>>,
    /// Where a test may create its vault and images.
    pub root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// Every backend available here: plain syscalls and io_uring on a temporary directory (io_uring
/// skipped with a note where the kernel refuses it), and the simulator. `REPLOG_IO_BACKEND=sync`
/// leaves io_uring out, as on a machine without it.
pub fn backends(sim_seed: u64) -> Vec<Backend> {
    let mut out = Vec::new();
    let forced_sync = std::env::var(replog_io::BACKEND_ENV).is_ok_and(|v| v == "sync");
    let mut names = vec!["sync"];
    if !forced_sync {
        names.push("uring");
    }
    for name in names {
        match replog_io::backend(name) {
            Ok(storage) => {
                let tmp = tempfile::tempdir().expect("a temporary directory");
                out.push(Backend { name, storage, sim: None, root: tmp.path().to_path_buf(), _tmp: Some(tmp) });
            }
            Err(e) => eprintln!("note: the {name} backend is unavailable here ({e}); skipped"),
        }
    }
    let sim = SimStorage::new(sim_seed);
    sim.create_dir_all(std::path::Path::new("/sim")).expect("the simulator creates directories");
    sim.make_all_durable();
    let storage: Arc<dyn Storage> = sim.clone();
    out.push(Backend { name: "sim", storage, sim: Some(sim), root: PathBuf::from("/sim"), _tmp: None });
    out
}

/// The storage named by `REPLOG_IO_BACKEND` (default: io_uring where it works).
pub fn env_storage() -> Arc<dyn Storage> {
    replog_io::backend_from_env().expect("the chosen I/O backend is available")
}
