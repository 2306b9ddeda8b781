//! Real object stores for the remote tests, started by the tests themselves on loopback:
//! [`S3Server`] runs s3s-fs (an S3 server over a directory) and [`AzuriteServer`] runs the blob
//! service of Azurite (Azure's storage emulator), and [`MotoServer`] runs moto's S3 server, the
//! one of the three that has S3 Object Lock. `scripts/setup.sh` installs all three.
//!
//! Each fixture picks a free port on 127.0.0.1, waits until its server accepts connections,
//! holds one bucket (or container) named [`BUCKET`], and gives the `object_store` settings that
//! reach it. A fixture can [`kill`](S3Server::kill) its server, to test a store that disappears
//! in the middle of an upload, and [`restart`](S3Server::restart) it on the same port. Dropping a
//! fixture kills its server and removes its files.
//!
//! The port is found by binding port 0 and letting go of it before the server binds it, so
//! another process could take it in between; the server then fails to start and says so.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// The bucket (S3) or container (Azure) that every fixture holds.
pub const BUCKET: &str = "replog";

/// The access key [`S3Server`] accepts.
const S3_ACCESS_KEY: &str = "replog-test";

/// The secret key [`S3Server`] accepts.
const S3_SECRET_KEY: &str = "replog-test-secret";

/// The account Azurite serves.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";

/// The key of [`AZURITE_ACCOUNT`], the well-known one from Azurite's README.
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// The `x-ms-version` of the request that creates the container.
const AZURE_API_VERSION: &str = "2023-11-03";

/// How long a server may take to accept connections after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How much of a server's output a start-up error quotes, at most (its end).
const LOG_TAIL: usize = 4000;

/// An S3 server (s3s-fs) on loopback with an empty bucket [`BUCKET`]. Its objects are files in a
/// temporary directory, so they survive [`S3Server::restart`].
#[derive(Debug)]
pub struct S3Server {
    // Declared before `dir`, so the process is killed before its files are removed.
    server: Server,
    dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts s3s-fs over a new temporary directory and waits until it accepts connections.
    pub fn start() -> io::Result<S3Server> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join(BUCKET))?;
        let port = free_port()?;
        let mut args: Vec<OsString> = [
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            S3_ACCESS_KEY,
            "--secret-key",
            S3_SECRET_KEY,
        ]
        .iter()
        .map(OsString::from)
        .collect();
        args.push(root.into_os_string());
        let server = Server::start("s3s-fs", args, port, dir.path())?;
        Ok(S3Server { server, dir })
    }

    /// The server's URL: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    /// The bucket's name, [`BUCKET`].
    pub fn bucket(&self) -> &'static str {
        BUCKET
    }

    /// The access key the server accepts.
    pub fn access_key(&self) -> &'static str {
        S3_ACCESS_KEY
    }

    /// The secret key the server accepts.
    pub fn secret_key(&self) -> &'static str {
        S3_SECRET_KEY
    }

    /// The remote URL of `prefix` in the bucket: `s3://replog/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// The environment variables that point `object_store`'s `AmazonS3Builder::from_env` at this
    /// server. Lowercased, the names are also its configuration keys.
    pub fn env(&self) -> Vec<(String, String)> {
        s3_env(self.endpoint())
    }

    /// Where the objects are: one directory per bucket, one file per object.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Kills the server at once (SIGKILL); requests then fail to connect. Does nothing if it is
    /// not running.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts the server again on the same port and directory, killing it first if it runs; the
    /// objects written before are still there.
    pub fn restart(&mut self) -> io::Result<()> {
        self.server.kill();
        self.server.spawn()
    }
}

/// Azurite's blob service on loopback, with an empty container [`BUCKET`] in the account
/// [`AZURITE_ACCOUNT`]. It keeps blobs in memory only, so [`AzuriteServer::restart`] loses them.
#[derive(Debug)]
pub struct AzuriteServer {
    // Declared before `_dir`, so the process is killed before its files are removed.
    server: Server,
    _dir: tempfile::TempDir,
}

impl AzuriteServer {
    /// Starts `azurite-blob`, waits until it accepts connections and creates the container.
    pub fn start() -> io::Result<AzuriteServer> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        // No --location: Azurite refuses it with --inMemoryPersistence. It runs in `dir` instead.
        let args = [
            "--inMemoryPersistence",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let server = Server::start("azurite-blob", args, port, dir.path())?;
        create_container(port)?;
        Ok(AzuriteServer { server, _dir: dir })
    }

    /// The account's URL: `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.server.port)
    }

    /// The container's name, [`BUCKET`].
    pub fn container(&self) -> &'static str {
        BUCKET
    }

    /// The remote URL of `prefix` in the container: `az://replog/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!("az://{BUCKET}/{prefix}")
    }

    /// The environment variables that point `object_store`'s `MicrosoftAzureBuilder::from_env`
    /// at this server. Lowercased, the names are also its configuration keys.
    ///
    /// They name the endpoint rather than set `AZURE_STORAGE_USE_EMULATOR`: in emulator mode
    /// `object_store` 0.14 reads the address from the process variable `AZURITE_BLOB_STORAGE_URL`
    /// only, which no configuration key overrides, so a client built in this process could not be
    /// pointed at a port of its own. A child process may instead be given
    /// `AZURE_STORAGE_USE_EMULATOR=true` and `AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:PORT`.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AZURE_STORAGE_ACCOUNT_NAME", AZURITE_ACCOUNT.to_owned()),
            ("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY.to_owned()),
            ("AZURE_STORAGE_ENDPOINT", self.endpoint()),
            ("AZURE_ALLOW_HTTP", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Kills the server at once (SIGKILL); requests then fail to connect, and every blob is
    /// lost. Does nothing if it is not running.
    pub fn kill(&mut self) {
        self.server.kill();
    }

    /// Starts the server again on the same port, killing it first if it runs, and creates the
    /// container again. It starts empty: blobs written before are gone.
    pub fn restart(&mut self) -> io::Result<()> {
        self.server.kill();
        self.server.spawn()?;
        create_container(self.server.port)
    }
}

/// The bucket without Object Lock that [`MotoServer`] also holds.
pub const PLAIN_BUCKET: &str = "replog-plain";

/// moto's S3 server on loopback, with an empty bucket [`BUCKET`] that has S3 Object Lock
/// enabled (and so versioning) and an empty bucket [`PLAIN_BUCKET`] that has not. It keeps
/// objects in memory and checks no signature; a lock's mode and date are real, and so is its
/// refusal to delete a locked version.
#[derive(Debug)]
pub struct MotoServer {
    // Declared before `_dir`, so the process is killed before its files are removed.
    server: Server,
    _dir: tempfile::TempDir,
}

impl MotoServer {
    /// Whether moto's server can be run here (`python3 -m moto.server`).
    pub fn available() -> bool {
        Command::new("python3")
            .args(["-c", "import moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts the server, or returns `None` after saying why on stderr when moto is not
    /// installed and `CI` is not set (a test then skips). Under `CI`, a missing moto panics:
    /// CI must run these tests.
    pub fn start_or_skip(test: &str) -> Option<MotoServer> {
        if !MotoServer::available() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: moto is not installed (python3 -m moto.server), and CI must run this \
                 test: run scripts/setup.sh"
            );
            eprintln!("{test}: skipped: moto is not installed (run scripts/setup.sh)");
            return None;
        }
        Some(MotoServer::start().expect("moto's server starts"))
    }

    /// Starts the server and creates its two buckets.
    pub fn start() -> io::Result<MotoServer> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let args = [
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let server = Server::start("python3", args, port, dir.path())?;
        create_bucket(port, BUCKET, true)?;
        create_bucket(port, PLAIN_BUCKET, false)?;
        Ok(MotoServer { server, _dir: dir })
    }

    /// The server's URL: `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    /// The remote URL of `prefix` in the bucket with Object Lock: `s3://replog/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// The remote URL of `prefix` in the bucket without Object Lock.
    pub fn plain_url(&self, prefix: &str) -> String {
        format!("s3://{PLAIN_BUCKET}/{prefix}")
    }

    /// The environment variables that point `object_store`'s `AmazonS3Builder::from_env` (and
    /// so the `replog` binary) at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        s3_env(self.endpoint())
    }
}

/// The variables that point `AmazonS3Builder::from_env` at an S3 server at `endpoint` that
/// accepts the test keys.
fn s3_env(endpoint: String) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT", endpoint),
        ("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY.to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Creates `bucket` in moto on `port` (`PUT /BUCKET`, path style, with
/// `x-amz-bucket-object-lock-enabled: true` when `object_lock`), over plain HTTP/1.1. moto
/// checks no signature, so none is sent.
fn create_bucket(port: u16, bucket: &str, object_lock: bool) -> io::Result<()> {
    let lock = if object_lock {
        "x-amz-bucket-object-lock-enabled: true\r\n"
    } else {
        ""
    };
    let request = format!(
        "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{lock}Content-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    send_create(
        port,
        &request,
        "200",
        &format!("moto did not create the bucket {bucket}"),
    )
}

/// Sends `request` to 127.0.0.1:`port` and reads the whole response, whose status must be
/// `status`; otherwise the error is `failure` and the response.
fn send_create(port: u16, request: &str, status: &str, failure: &str) -> io::Result<()> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    if response.split(' ').nth(1) == Some(status) {
        return Ok(());
    }
    Err(io::Error::other(format!("{failure}: {response}")))
}

/// One server process: how to start it, where it runs, and the child while it runs.
#[derive(Debug)]
struct Server {
    program: &'static str,
    args: Vec<OsString>,
    port: u16,
    /// The working directory; it also holds `PROGRAM.log`, the process's stdout and stderr.
    dir: PathBuf,
    child: Option<Child>,
}

impl Server {
    /// Spawns `program` with `args`, which make it listen on 127.0.0.1:`port`, in `dir`.
    fn start(
        program: &'static str,
        args: Vec<OsString>,
        port: u16,
        dir: &Path,
    ) -> io::Result<Server> {
        let mut server = Server {
            program,
            args,
            port,
            dir: dir.to_path_buf(),
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    /// Where the process's output goes (appended, across restarts).
    fn log(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.program))
    }

    /// Spawns the process and waits until the port accepts connections. On failure the process
    /// is killed and the error quotes the end of its output.
    fn spawn(&mut self) -> io::Result<()> {
        let log = File::options().create(true).append(true).open(self.log())?;
        let child = Command::new(self.program)
            .args(&self.args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => io::Error::new(
                    e.kind(),
                    format!("{} is not on PATH: run scripts/setup.sh", self.program),
                ),
                _ => io::Error::new(e.kind(), format!("cannot run {}: {e}", self.program)),
            })?;
        self.child = Some(child);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        let why = loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            let child = self.child.as_mut().expect("spawned above");
            if let Some(status) = child.try_wait()? {
                break format!("exited ({status})");
            }
            if Instant::now() >= deadline {
                break format!("accepted no connection on {addr} within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.kill();
        let output = std::fs::read(self.log()).unwrap_or_default();
        let tail = &output[output.len().saturating_sub(LOG_TAIL)..];
        Err(io::Error::other(format!(
            "{} {why}; the end of its output:\n{}",
            self.program,
            String::from_utf8_lossy(tail)
        )))
    }

    /// Kills the process, if it runs, and reaps it.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Either fails only if the process is already gone, which is what is wanted.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port that nothing listens on at the moment.
fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Creates the container [`BUCKET`] in Azurite on `port`: a Create Container request (`PUT
/// /ACCOUNT/CONTAINER?restype=container`) signed with the account key (Shared Key
/// authorization), over plain HTTP/1.1.
fn create_container(port: u16) -> io::Result<()> {
    let date = jiff::fmt::rfc2822::DateTimePrinter::new()
        .timestamp_to_rfc9110_string(&jiff::Timestamp::now())
        .map_err(io::Error::other)?;
    let path = format!("/{AZURITE_ACCOUNT}/{BUCKET}");
    // The Blob service's string to sign: the verb, eleven standard headers (all empty here; a
    // zero Content-Length is signed as empty), the x-ms- headers sorted, then the resource: the
    // account, the URL's path (which starts with the account again in path-style URLs) and the
    // query parameters.
    let to_sign = format!(
        "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{AZURE_API_VERSION}\n\
         /{AZURITE_ACCOUNT}{path}\nrestype:container"
    );
    let key = BASE64.decode(AZURITE_KEY).map_err(io::Error::other)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes a key of any length");
    mac.update(to_sign.as_bytes());
    let signature = BASE64.encode(mac.finalize().into_bytes());
    let request = format!(
        "PUT {path}?restype=container HTTP/1.1\r\n\
         Host: 127.0.0.1:{port}\r\n\
         x-ms-date: {date}\r\n\
         x-ms-version: {AZURE_API_VERSION}\r\n\
         Authorization: SharedKey {AZURITE_ACCOUNT}:{signature}\r\n\
         Content-Length: 0\r\n\
         Connection: close\r\n\r\n"
    );
    send_create(
        port,
        &request,
        "201",
        &format!("Azurite did not create the container {BUCKET}"),
    )
}
