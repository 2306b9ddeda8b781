//! A crash at every request of a sync against a real s3s-fs: each request fails once, before or
//! after the store applies it, and everything after it fails too (a dead process). Run on the
//! default backend only: the object store is what crashes, and the local vault's I/O on each
//! backend is what `remote.rs` covers.

use std::sync::Arc;

use object_store::ObjectStore;
use replog_remote::fault::{FaultMode, FaultPlan, FaultStore};
use replog_remote::{LocalVault, Remote};
use replog_tests::copy_dir;
use replog_tests::servers::S3Server;

use super::remote::{
    add_remote, keys, local_contents, needed_keys, options, plain_store, remote_contents, sync,
    write_rounds,
};

/// Disks of the crash test, which syncs once per request of a sync.
const SMALL_DISK_BYTES: u64 = 2 << 20;

#[test]
fn a_crash_at_every_request_of_a_sync_loses_nothing_and_leaves_nothing_twice() {
    let server = S3Server::start().expect("s3s-fs started");
    let opts = options(server.env());
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template");
    write_rounds(&template, 0, 3, SMALL_DISK_BYTES);
    // Every case's vault holds the same points after its changes: the same writes to a copy of
    // the same template. So they are read once, here, from local files; reading them in each
    // case went through the remote (the first sync evicts) and was a sixth of the test's time.
    let expected = {
        let dir = tmp.path().join("expected");
        copy_dir(&template, &dir);
        write_rounds(&dir, 3, 2, SMALL_DISK_BYTES);
        local_contents(&dir, &opts)
    };
    assert_eq!(
        expected.len(),
        5,
        "three points in the template, two more in each case"
    );

    // Count the requests of the sync under test (the second one, after more changes).
    let run = |n: u64, mode: FaultMode| -> Option<u64> {
        let dir = tmp.path().join(format!("v-{n}-{mode:?}"));
        copy_dir(&template, &dir);
        let url = server.url(&format!("crash/{n}-{mode:?}"));
        let plain = Remote::open(&url, &opts).expect("remote");
        add_remote(&dir, &url, &plain, 1);
        sync(&dir, &plain).expect("first sync");
        write_rounds(&dir, 3, 2, SMALL_DISK_BYTES);

        let inner: Arc<dyn ObjectStore> = plain_store(&server);
        let plan = FaultPlan::new(n, mode);
        let faulty =
            Remote::with_store(Arc::new(FaultStore::new(inner, plan.clone())), &url).unwrap();
        let crashed = sync(&dir, &faulty);
        assert_eq!(crashed.is_err(), plan.crashed(), "request {n}: {crashed:?}");
        // The bucket is usable as the crash left it (the machine may be gone now): its newest
        // manifest reads every point it lists exactly, and lists at least what the first
        // sync published.
        let remote = Arc::new(Remote::open(&url, &opts).expect("remote"));
        let seen = remote_contents(remote);
        assert!(
            seen.len() >= 3,
            "request {n} {mode:?}: {} points",
            seen.len()
        );
        for (id, disks) in &seen {
            assert_eq!(
                Some(disks),
                expected.get(id),
                "request {n} {mode:?}: point {id}"
            );
        }
        // Whatever happened, the local vault reads every point as before.
        assert_eq!(
            local_contents(&dir, &opts),
            expected,
            "request {n} {mode:?}"
        );
        // Resume with the store back.
        sync(&dir, &plain).unwrap_or_else(|e| panic!("resume after request {n}: {e}"));
        assert_eq!(
            local_contents(&dir, &opts),
            expected,
            "request {n} {mode:?}"
        );
        let local = LocalVault::open(&dir).unwrap();
        assert_eq!(
            keys(&plain),
            needed_keys(&plain, local.seed, local.vault_id),
            "request {n} {mode:?}: an object left over"
        );
        let remote = Arc::new(plain);
        assert_eq!(remote_contents(remote), expected, "request {n} {mode:?}");
        std::fs::remove_dir_all(&dir).unwrap();
        (!plan.crashed()).then(|| plan.requests())
    };
    every_crash(run);
}

/// Runs `run` once without a crash to count the requests of the sync under test (`run` returns
/// that count when nothing crashed), then once per request and [`FaultMode`], side by side: each
/// case has its own vault and prefix, so the time goes into waiting for the server. Returns the
/// number of crash points.
pub(super) fn every_crash(run: impl Fn(u64, FaultMode) -> Option<u64> + Sync) -> usize {
    let total = run(u64::MAX, FaultMode::BeforeApply).expect("a clean run");
    assert!(total > 10, "a sync makes {total} requests");
    let cases: Vec<(u64, FaultMode)> = [FaultMode::BeforeApply, FaultMode::AfterApply]
        .into_iter()
        .flat_map(|mode| (0..total).map(move |n| (n, mode)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                while let Some(&(n, mode)) =
                    cases.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    assert_eq!(run(n, mode), None, "request {n} of {total} must crash");
                }
            });
        }
    });
    cases.len()
}
