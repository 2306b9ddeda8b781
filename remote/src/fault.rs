//! A store that crashes on purpose: it counts requests and, at a chosen one, fails it and every
//! request after it, as a process that died there would. Tests drive `sync` through it to crash
//! it at every step. With [`FaultMode::AfterApply`] the failing write or delete is carried out
//! first, so the crash falls between the store's change and the caller learning of it.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// Where the crash falls relative to the failing request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultMode {
    /// The request is not carried out.
    BeforeApply,
    /// A write or delete is carried out, then reported failed.
    AfterApply,
}

/// The plan shared by a [`FaultStore`] and its test.
#[derive(Debug)]
pub struct FaultPlan {
    requests: AtomicU64,
    crash_at: AtomicU64,
    after_apply: AtomicBool,
    crashed: AtomicBool,
}

impl FaultPlan {
    /// A plan that crashes at request number `crash_at` (from 0); `u64::MAX` never crashes.
    pub fn new(crash_at: u64, mode: FaultMode) -> Arc<FaultPlan> {
        Arc::new(FaultPlan {
            requests: AtomicU64::new(0),
            crash_at: AtomicU64::new(crash_at),
            after_apply: AtomicBool::new(mode == FaultMode::AfterApply),
            crashed: AtomicBool::new(false),
        })
    }

    /// Requests seen so far, the failed ones included.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Whether the crash happened.
    pub fn crashed(&self) -> bool {
        self.crashed.load(Ordering::SeqCst)
    }

    /// Counts a request; `Some(apply_first)` when it must fail.
    fn check(&self) -> Option<bool> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        if self.crashed.load(Ordering::SeqCst) {
            return Some(false);
        }
        if n == self.crash_at.load(Ordering::SeqCst) {
            self.crashed.store(true, Ordering::SeqCst);
            return Some(self.after_apply.load(Ordering::SeqCst));
        }
        None
    }
}

fn crash() -> object_store::Error {
    object_store::Error::Generic {
        store: "fault",
        source: "injected crash: the process is gone".into(),
    }
}

/// An [`ObjectStore`] that forwards to another until its [`FaultPlan`] says crash.
#[derive(Debug)]
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    plan: Arc<FaultPlan>,
}

impl FaultStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ObjectStore>, plan: Arc<FaultPlan>) -> FaultStore {
        FaultStore { inner, plan }
    }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        match self.plan.check() {
            None => self.inner.put_opts(location, payload, opts).await,
            Some(apply) => {
                if apply {
                    let _ = self.inner.put_opts(location, payload, opts).await;
                }
                Err(crash())
            }
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        match self.plan.check() {
            None => self.inner.put_multipart_opts(location, opts).await,
            Some(_) => Err(crash()),
        }
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        match self.plan.check() {
            None => self.inner.get_opts(location, options).await,
            Some(_) => Err(crash()),
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let inner = self.inner.clone();
        let plan = self.plan.clone();
        locations
            .then(move |location| {
                let (inner, plan) = (inner.clone(), plan.clone());
                async move {
                    let location = location?;
                    match plan.check() {
                        None => inner.delete(&location).await.map(|()| location),
                        Some(apply) => {
                            if apply {
                                let _ = inner.delete(&location).await;
                            }
                            Err(crash())
                        }
                    }
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.plan.check() {
            None => self.inner.list(prefix),
            Some(_) => futures::stream::once(async { Err(crash()) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        match self.plan.check() {
            None => self.inner.list_with_delimiter(prefix).await,
            Some(_) => Err(crash()),
        }
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        match self.plan.check() {
            None => self.inner.copy_opts(from, to, options).await,
            Some(_) => Err(crash()),
        }
    }
}
