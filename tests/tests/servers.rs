//! The object-store fixtures of `replog_tests::servers` against `object_store`'s own clients:
//! each server starts, takes a put, returns the object and lists it, and answers a second
//! create-if-absent put the way the remote code expects. A killed server fails requests promptly,
//! and a restarted one serves again.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    RetryConfig,
};
use replog_tests::servers::{AzuriteServer, S3Server};

/// Longest any request of these tests may take, retries included, before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Few, quick retries, so that a request to a dead server fails within seconds.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 2,
        retry_timeout: Duration::from_secs(5),
    }
}

fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_timeout(Duration::from_secs(10))
        .with_connect_timeout(Duration::from_secs(2))
}

/// An S3 client for `server`: the environment's settings, overridden by the fixture's. The
/// client options go first: `with_client_options` replaces them whole, `aws_allow_http` included.
fn s3_store(server: &S3Server) -> Arc<dyn ObjectStore> {
    replog_remote::install_tls_provider();
    let mut builder = AmazonS3Builder::from_env().with_client_options(client_options());
    for (name, value) in server.env() {
        let key = name.to_ascii_lowercase().parse().expect("an S3 config key");
        builder = builder.with_config(key, value);
    }
    Arc::new(
        builder
            .with_bucket_name(server.bucket())
            .with_retry(retry())
            .build()
            .expect("an S3 client"),
    )
}

/// An Azure client for `server`: the environment's settings, overridden by the fixture's (after
/// the client options, as for S3).
fn azure_store(server: &AzuriteServer) -> Arc<dyn ObjectStore> {
    replog_remote::install_tls_provider();
    let mut builder = MicrosoftAzureBuilder::from_env().with_client_options(client_options());
    for (name, value) in server.env() {
        let key = name
            .to_ascii_lowercase()
            .parse()
            .expect("an Azure config key");
        builder = builder.with_config(key, value);
    }
    Arc::new(
        builder
            .with_container_name(server.container())
            .with_retry(retry())
            .build()
            .expect("an Azure client"),
    )
}

/// Runs `fut`, failing the test if it takes longer than [`DEADLINE`].
async fn bounded<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {DEADLINE:?}"))
}

/// Puts, gets and lists an object under `dir`, then puts another one twice in create mode: the
/// second put must be refused with `AlreadyExists` and leave the first bytes. Both servers honour
/// the `If-None-Match: *` that `object_store` sends for a create; a server that overwrote instead
/// would hide the races that create-if-absent exists to catch.
async fn exercise(store: &dyn ObjectStore, dir: &str) {
    let key = Path::from(format!("{dir}/segments/0001"));
    bounded("put", store.put(&key, PutPayload::from_static(b"first")))
        .await
        .expect("put");
    let got = bounded("get", async { store.get(&key).await?.bytes().await })
        .await
        .expect("get");
    assert_eq!(&got[..], b"first");
    let listed: Vec<_> = bounded("list", store.list(Some(&Path::from(dir))).try_collect())
        .await
        .expect("list");
    let listed: Vec<_> = listed
        .iter()
        .map(|m| (m.location.as_ref(), m.size))
        .collect();
    assert_eq!(listed, [(key.as_ref(), 5)]);

    let created = Path::from(format!("{dir}/created"));
    let create = |bytes: &'static [u8]| {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        store.put_opts(&created, PutPayload::from_static(bytes), opts)
    };
    bounded("create", create(b"one")).await.expect("create");
    match bounded("second create", create(b"two")).await {
        Err(object_store::Error::AlreadyExists { .. }) => {}
        other => panic!("a second create of {created} was not refused as existing: {other:?}"),
    }
    let got = bounded("get", async { store.get(&created).await?.bytes().await })
        .await
        .expect("get");
    assert_eq!(&got[..], b"one");
}

#[test]
fn s3s_fs_serves_puts_gets_lists_and_creates() {
    let server = S3Server::start().expect("s3s-fs starts");
    assert_eq!(server.url("vault/a"), "s3://replog/vault/a");
    let store = s3_store(&server);
    runtime().block_on(exercise(store.as_ref(), "vault"));
}

#[test]
fn azurite_serves_puts_gets_lists_and_creates() {
    let server = AzuriteServer::start().expect("azurite starts");
    assert_eq!(server.url("vault/a"), "az://replog/vault/a");
    let store = azure_store(&server);
    runtime().block_on(exercise(store.as_ref(), "vault"));
}

#[test]
fn s3s_fs_killed_fails_puts_and_restarted_keeps_objects() {
    let mut server = S3Server::start().expect("s3s-fs starts");
    let store = s3_store(&server);
    let rt = runtime();
    let key = Path::from("vault/kept");
    rt.block_on(bounded(
        "put",
        store.put(&key, PutPayload::from_static(b"kept")),
    ))
    .expect("put");

    server.kill();
    let lost = Path::from("vault/lost");
    let put = rt.block_on(bounded(
        "put to a killed server",
        store.put(&lost, PutPayload::from_static(b"lost")),
    ));
    assert!(put.is_err(), "a put to a killed server succeeded");

    server.restart().expect("s3s-fs restarts");
    let got = rt
        .block_on(bounded("get", async {
            store.get(&key).await?.bytes().await
        }))
        .expect("get after a restart");
    assert_eq!(&got[..], b"kept");
    rt.block_on(bounded(
        "put",
        store.put(&lost, PutPayload::from_static(b"lost")),
    ))
    .expect("put after a restart");
    assert!(server.root().join("replog/vault/lost").is_file());
}

#[test]
fn azurite_killed_fails_puts_and_restarted_starts_empty() {
    let mut server = AzuriteServer::start().expect("azurite starts");
    let store = azure_store(&server);
    let rt = runtime();
    let key = Path::from("vault/gone");
    rt.block_on(bounded(
        "put",
        store.put(&key, PutPayload::from_static(b"gone")),
    ))
    .expect("put");

    server.kill();
    let put = rt.block_on(bounded(
        "put to a killed server",
        store.put(&key, PutPayload::from_static(b"again")),
    ));
    assert!(put.is_err(), "a put to a killed server succeeded");

    server.restart().expect("azurite restarts");
    let get = rt.block_on(bounded("get", store.get(&key)));
    assert!(
        matches!(get, Err(object_store::Error::NotFound { .. })),
        "a blob survived a restart of in-memory Azurite: {get:?}"
    );
    rt.block_on(bounded(
        "put",
        store.put(&key, PutPayload::from_static(b"again")),
    ))
    .expect("put after a restart");
}
