//! The command line, declared with clap. These commands and flags are the contract.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

pub use replog_image::SourceFormat;
pub use replog_vault::OutputFormat;

/// replog: a replica disk store for disaster recovery and migration.
///
/// A vault holds base images of a machine's disks and a journal of their changes, with recovery
/// points you can fail over to. Exit codes: 0 success, 1 failure, 2 damage found, 64 usage error.
#[derive(Debug, Parser)]
#[command(name = "replog", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// I/O backend for writing: io_uring, plain syscalls, or the first that works.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "REPLOG_IO_BACKEND",
        default_value = "auto"
    )]
    pub backend: Backend,
    /// An `object_store` setting for the remote, KEY=VALUE (`aws_endpoint=http://...`,
    /// `azure_storage_account_key=...`); repeatable. Endpoint and credentials are otherwise read
    /// from the standard variables (`AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`, `AZURE_STORAGE_*`, ...).
    #[arg(long = "remote-option", global = true, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub remote_options: Vec<(String, String)>,
    /// Retries of a failed request to the remote before giving up.
    #[arg(long, global = true, default_value_t = 5)]
    pub remote_retries: usize,
    /// Reading a remote (`points`, `inspect`, `failover` of s3://... or az://...): when its
    /// newest remote manifest is damaged or missing, read the newest one that is whole instead,
    /// with a warning. Points after it are not offered.
    #[arg(long, global = true)]
    pub allow_older: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// I/O backends.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Backend {
    /// io_uring where the kernel allows it, plain syscalls otherwise.
    Auto,
    /// io_uring only.
    Uring,
    /// Plain syscalls only.
    Sync,
}

/// Payload compression.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CompressionArg {
    /// Store payloads as written.
    None,
    /// LZ4 where it saves space.
    Lz4,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new, empty vault.
    Init(InitArgs),
    /// Manage the vault's disks.
    #[command(subcommand)]
    Disk(DiskCommand),
    /// Replicate the current content of a raw image of disk NAME, journaling only what changed.
    Ingest(IngestArgs),
    /// Take a recovery point over all disks; prints its id.
    Point(PointArgs),
    /// List recovery points.
    Points(PointsArgs),
    /// Show disks, sizes, segments, bytes, points and RPO.
    Inspect(InspectArgs),
    /// Print journal records one per line, for debugging the format.
    Dump(DumpArgs),
    /// Check every checksum and cross-reference. Exit 0 when intact, 2 when damaged.
    Verify(VerifyArgs),
    /// Write a checkpoint index (the merged extent map) at the end of the newest sealed journal
    /// segment, so resolving later points starts there. `ingest` and `point` keep one current.
    Checkpoint(CheckpointArgs),
    /// Materialize every disk at a recovery point as DIR/NAME.raw, or in another --format, or
    /// write it into NBD exports or block devices (--to).
    Failover(FailoverArgs),
    /// Configure the vault's object storage remote.
    #[command(subcommand)]
    Remote(RemoteCommand),
    /// Key files for encrypted vaults.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Upload sealed segments, checkpoints and bases to the remote, publish a remote manifest,
    /// evict local files beyond the cache limit, and delete remote objects no longer needed.
    /// Resumable: run it again after any failure.
    Sync(SyncArgs),
    /// Protect a running QEMU's disks: every --every, cut them all at one instant over QMP,
    /// journal what changed (dirty bitmaps over NBD) and take one point. Runs until SIGTERM
    /// or --cycles; --status shows how it is doing.
    Replicate(ReplicateArgs),
    /// Serve a recovery point over NBD (read-only, or writable through a discarded overlay),
    /// or capture NBD writes into the journal (--capture).
    ServeNbd(ServeNbdArgs),
    /// Show or set the retention policy (window, thinning tiers) and pinned points.
    Retention(RetentionArgs),
    /// Apply the retention policy (or keep the newest N points): drop points, reclaim space.
    Prune(PruneArgs),
    /// Materialize a point for a test without touching replication; --cleanup ends it.
    TestFailover(TestFailoverArgs),
    /// End a migration: materialize and verify the disks, seal the vault, remove its journal.
    CompleteMigration(CompleteMigrationArgs),
    /// Measure the writer.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// A deterministic write load for crash tests; prints each acknowledged point.
    #[command(hide = true)]
    Torture(TortureArgs),
    /// Run the whole lifecycle on generated disks and check every point byte for byte.
    Demo(DemoArgs),
    /// Print the completion script for SHELL (install: see README, "Shell completions").
    Completions(CompletionsArgs),
    /// Write the man pages, replog.1 and one per command (replog-failover.1, ...), into DIR.
    Man(ManArgs),
}

/// Key files.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Write a new random key to FILE (created with mode 0600, never over an existing file) and
    /// print its fingerprint. Keep a copy away from the vault and its remote.
    Generate(KeyGenerateArgs),
}

/// `replog key generate`.
#[derive(Debug, Args)]
pub struct KeyGenerateArgs {
    /// The key file to create.
    pub file: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Open VAULT and resolve its newest, middle and oldest point: the time to the first byte
    /// of a failover, and which checkpoint index each started from.
    Resolve(BenchResolveArgs),
    /// Read every byte of one point of VAULT as a failover would (resolved, read, verified and
    /// summed in parallel), writing nothing: a failover's read pass at sizes whose images would
    /// not fit. Reports the time to the first byte, the read time and peak memory.
    Read(BenchReadArgs),
    /// Write through the writer API into disk "bench" of VAULT (created if missing) and report
    /// MB/s, IOPS, point latency p50/p99 and peak memory.
    Write(BenchWriteArgs),
}

impl Command {
    /// The vault the command works on, if it names one: errors about the vault's files name
    /// them relative to it, and the tool names the vault in front.
    pub fn vault(&self) -> Option<&std::path::Path> {
        let vault = match self {
            Command::Init(a) => &a.vault,
            Command::Disk(DiskCommand::Add(a)) => &a.vault,
            Command::Disk(DiskCommand::Resize(a)) => &a.vault,
            Command::Ingest(a) => &a.vault,
            Command::Point(a) => &a.vault,
            Command::Points(a) => &a.vault,
            Command::Inspect(a) => &a.vault,
            Command::Dump(a) => &a.vault,
            Command::Verify(a) => &a.vault,
            Command::Checkpoint(a) => &a.vault,
            Command::Remote(RemoteCommand::Add(a)) => &a.vault,
            Command::Remote(RemoteCommand::Show(a)) => &a.vault,
            Command::Sync(a) => &a.vault,
            Command::Replicate(a) => &a.vault,
            Command::Torture(a) => &a.vault,
            Command::Bench(BenchCommand::Resolve(a)) => &a.vault,
            Command::Bench(BenchCommand::Read(a)) => &a.vault,
            Command::Bench(BenchCommand::Write(a)) => &a.vault,
            Command::Failover(a) => &a.vault,
            Command::ServeNbd(a) => &a.vault,
            Command::Retention(a) => &a.vault,
            Command::Prune(a) => &a.vault,
            Command::TestFailover(a) => &a.vault,
            Command::CompleteMigration(a) => &a.vault,
            Command::Demo(_) | Command::Completions(_) | Command::Man(_) | Command::Key(_) => {
                return None;
            }
        };
        Some(vault)
    }
}

/// Offsets of a write benchmark.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Pattern {
    /// One after the other, wrapping at the end of the disk.
    Seq,
    /// Uniformly random, block-aligned.
    Rand,
}

/// Disk commands.
#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    /// Add a disk, seeded from a raw image (--from) or empty (--size).
    Add(DiskAddArgs),
    /// Grow a disk to SIZE: points before keep the old size, the new range reads as zeros.
    Resize(DiskResizeArgs),
}

/// Arguments of `replog disk resize`.
#[derive(Debug, Args)]
pub struct DiskResizeArgs {
    /// The vault directory.
    pub vault: PathBuf,
    /// The disk's name.
    pub name: String,
    /// The new size (bytes, or with a suffix: 10GiB, 512M); disks only grow.
    #[arg(value_parser = parse_bytes)]
    pub size: u64,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `replog remote`.
#[derive(Debug, Subcommand)]
pub enum RemoteCommand {
    /// Set the vault's remote, s3://BUCKET/PREFIX or az://CONTAINER/PREFIX, and claim the
    /// prefix for the vault (a prefix holding another vault is refused). Run again to change
    /// the cache limit or the manifests kept.
    Add(RemoteAddArgs),
    /// Show the vault's remote and what its last sync confirmed.
    Show(RemoteShowArgs),
}

/// Parses a duration: a number with a unit, `s`, `m`, `h`, `d` or `w` (`72h`, `30m`, `3d`), or
/// `0`.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad =
        || format!("{s:?} is not a duration: use a number and a unit, e.g. 90s, 30m, 72h, 3d");
    if s == "0" {
        return Ok(0);
    }
    let unit_at = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = s.split_at(unit_at);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(scale).ok_or_else(bad)
}

/// Parses a lock period as `remote add --immutable` takes it: a duration ([`parse_duration`])
/// of at least one second and at most S3's longest retention
/// ([`LOCK_PERIOD_S_MAX`](replog_remote::lock::LOCK_PERIOD_S_MAX)). Returns seconds.
pub fn parse_lock_period(s: &str) -> Result<u64, String> {
    use replog_remote::lock::LOCK_PERIOD_S_MAX;
    match parse_duration(s) {
        Err(_) => Err(format!(
            "{s:?} is not a lock period: give a number and a unit, e.g. 30d, 12h"
        )),
        Ok(0) => Err(format!(
            "{s:?} is zero: an object must stay locked for a while"
        )),
        Ok(seconds) if seconds <= LOCK_PERIOD_S_MAX => Ok(seconds),
        Ok(_) => Err(format!(
            "{s:?} is longer than S3 allows (100 years, {LOCK_PERIOD_S_MAX} s)"
        )),
    }
}

/// Parses KEY=VALUE.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

/// Which point to fail over to, and where.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["point", "at", "latest"])))]
pub struct FailoverArgs {
    /// The vault directory, or a remote: s3://BUCKET/PREFIX, az://CONTAINER/PREFIX.
    pub vault: PathBuf,
    /// The point's id.
    #[arg(long)]
    pub point: Option<u64>,
    /// The newest point taken at or before this time (RFC 3339, e.g. 2026-11-22T03:00:00Z).
    #[arg(long)]
    pub at: Option<String>,
    /// The newest point.
    #[arg(long)]
    pub latest: bool,
    /// Refuse (exit 2) unless the vault reaches point N: a remote rolled back to an older
    /// manifest, or a copy older than you know the vault to be, is refused before anything is
    /// read. With N:CHAIN (the point's chain hash, from `replog points --json`), point N must
    /// also still be there with that hash.
    #[arg(long, value_name = "N[:CHAIN]", value_parser = parse_expected_point)]
    pub expect_point: Option<replog_vault::ExpectedPoint>,
    /// Output directory; DIR/NAME.FORMAT is written for every disk.
    #[arg(long, required_unless_present = "to")]
    pub out: Option<PathBuf>,
    /// Image format: raw (sparse) and vhd (fixed, Azure's upload format) are written natively;
    /// qcow2, vhdx and vmdk by qemu-img.
    #[arg(long, value_enum, default_value = "raw")]
    pub format: OutputFormat,
    /// Overwrite existing output files.
    #[arg(long)]
    pub force: bool,
    /// Do not sync the output before returning.
    #[arg(long)]
    pub no_sync: bool,
    /// Sum every byte while writing and read every image back against the sum once it is in
    /// place (by default each image is checked to be the file this run wrote, with no read).
    #[arg(long)]
    pub read_back: bool,
    /// From a remote: chunks fetched (and disk ranges written) at once.
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// The heap the point's extent maps may take (e.g. 512MiB); past it the view keeps only the
    /// journal after a checkpoint in memory and searches the checkpoint on disk (0: always).
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub memory_limit: u64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
    /// Serve every disk over NBD at once, writable, while DIR/NAME.raw is copied in the
    /// background; a killed run, run again, resumes. Exits once every disk is complete and no
    /// client is connected (75 when stopped before).
    #[arg(long, conflicts_with = "to")]
    pub live: bool,
    /// With --live: listen on this Unix socket (instead of TCP 127.0.0.1:10809).
    #[arg(long, requires = "live", conflicts_with = "listen")]
    pub unix: Option<PathBuf>,
    /// With --live: the TCP address to listen on (default 127.0.0.1:10809).
    #[arg(long, requires = "live")]
    pub listen: Option<String>,
    /// With --live: copy at most this many bytes per second from the vault (e.g. 50M).
    #[arg(long, requires = "live", value_parser = parse_bytes)]
    pub rate: Option<u64>,
    /// Write disk NAME into TARGET instead of an image file (repeatable, one per disk; a point
    /// of one disk may omit NAME=): an NBD export, nbd://HOST[:PORT]/EXPORT or
    /// nbd+unix:///EXPORT?socket=PATH, or a block device, /dev/... (refused while mounted or
    /// held). Zeros are written as zeros, the target is flushed, read back and checked.
    #[arg(
        long,
        value_name = "[NAME=]TARGET",
        value_parser = parse_target,
        conflicts_with_all = ["out", "format", "force", "no_sync"]
    )]
    pub to: Vec<replog_vault::DiskTarget>,
}

/// Parses `--expect-point N[:CHAIN]`.
pub fn parse_expected_point(s: &str) -> Result<replog_vault::ExpectedPoint, String> {
    let (id, hash) = match s.split_once(':') {
        Some((id, hash)) => (id, Some(hash)),
        None => (s, None),
    };
    let point_id = id
        .parse::<u64>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{id:?} is not a point id (1, 2, ...)"))?;
    let chain = match hash {
        None => None,
        Some(h) => Some(replog_format::chain::from_hex(h).ok_or_else(|| {
            format!("{h:?} is not a chain hash (64 hex digits, from `replog points --json`)")
        })?),
    };
    Ok(replog_vault::ExpectedPoint { point_id, chain })
}

/// Parses `--to [NAME=]TARGET`.
pub fn parse_target(s: &str) -> Result<replog_vault::DiskTarget, String> {
    replog_vault::DiskTarget::parse(s).map_err(|e| e.to_string())
}

/// Parses "4096", "64K", "64KiB", "10G", "1.5GiB" (binary multiples).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(s)
        .map_err(|e| format!("{s:?} is not a size: {e}"))
}

/// `replog retention`.
#[derive(Debug, Args)]
pub struct RetentionArgs {
    /// The vault directory.
    pub vault: PathBuf,
    /// Keep points this long (e.g. 72h); sets the default tiers: every point of the last 2h,
    /// one per hour beyond, app-consistent points for the whole window.
    #[arg(long, value_parser = parse_duration)]
    pub window: Option<u64>,
    /// Keep every point younger than this (default 2h).
    #[arg(long, value_parser = parse_duration)]
    pub recent: Option<u64>,
    /// Beyond --recent, keep one point per this span (default 1h; 0 keeps every point).
    #[arg(long, value_parser = parse_duration)]
    pub thin: Option<u64>,
    /// Keep app-consistent points this long (default: the window).
    #[arg(long, value_parser = parse_duration)]
    pub app_window: Option<u64>,
    /// Keep one app-consistent point per this span (default 0: every one).
    #[arg(long, value_parser = parse_duration)]
    pub app_thin: Option<u64>,
    /// Remove the policy.
    #[arg(long, conflicts_with_all = ["window", "recent", "thin", "app_window", "app_thin"])]
    pub clear: bool,
    /// Pin a point: it is never pruned (repeatable).
    #[arg(long)]
    pub pin: Vec<u64>,
    /// Unpin a point (repeatable).
    #[arg(long)]
    pub unpin: Vec<u64>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `replog prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The vault directory.
    pub vault: PathBuf,
    /// Keep only the newest N points (and pinned ones, and a test failover's) instead of the
    /// policy.
    #[arg(long)]
    pub keep_last: Option<usize>,
    /// Report what would be dropped and reclaimed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Wait up to this many seconds for readers holding older points (default 0: skip).
    #[arg(long, default_value_t = 0)]
    pub wait_for_leases: u64,
    /// Punch the records every kept point overwrote in a segment once they are this share of
    /// its live bytes (0 to 1; 0: any, 1: never).
    #[arg(long, default_value_t = 0.5)]
    pub garbage_ratio: f64,
    /// Evaluate the policy as if now were this time (RFC 3339).
    #[arg(long, hide = true)]
    pub now: Option<String>,
    /// The heap the new base's extent maps may take (e.g. 512MiB); past it the view keeps only
    /// the journal after a checkpoint in memory and searches the checkpoint on disk (0: always).
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub memory_limit: u64,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `replog test-failover`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").args(["point", "latest", "cleanup"]).required(true)))]
pub struct TestFailoverArgs {
    /// The vault directory.
    pub vault: PathBuf,
    /// The point's id.
    #[arg(long)]
    pub point: Option<u64>,
    /// The newest point.
    #[arg(long)]
    pub latest: bool,
    /// Output directory; DIR/NAME.raw is written for every disk.
    #[arg(long, required_unless_present = "cleanup")]
    pub out: Option<PathBuf>,
    /// End the active test failover: remove its disks and release its point.
    #[arg(long, conflicts_with_all = ["point", "latest", "out"])]
    pub cleanup: bool,
    /// The heap the point's extent maps may take (e.g. 512MiB); past it the view keeps only the
    /// journal after a checkpoint in memory and searches the checkpoint on disk (0: always).
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub memory_limit: u64,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `replog complete-migration`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").args(["point", "latest"])))]
pub struct CompleteMigrationArgs {
    /// The vault directory.
    pub vault: PathBuf,
    /// Output directory; DIR/NAME.raw is written for every disk.
    #[arg(long)]
    pub out: PathBuf,
    /// The point to migrate to.
    #[arg(long)]
    pub point: Option<u64>,
    /// The newest point (the default: the no-data-loss path after a final ingest).
    #[arg(long)]
    pub latest: bool,
    /// Report what would happen; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The heap the point's extent maps may take (e.g. 512MiB); past it the view keeps only
    /// the journal after a checkpoint in memory and searches the checkpoint on disk (0: always).
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub memory_limit: u64,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests;

/// Arguments of `replog init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The vault directory (must not exist, or be empty).
    pub vault: PathBuf,
    /// Block size of base checksums and ingest digests (power of two, 4K..4M).
    #[arg(long, default_value = "64KiB", value_parser = parse_bytes)]
    pub block_size: u64,
    /// Size at which a journal segment is sealed (64K..4G).
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
    pub segment_size: u64,
    /// Payload compression.
    #[arg(long, value_enum, default_value = "none")]
    pub compression: CompressionArg,
}

/// What `--from` names: an image file or device, or an NBD export.
#[derive(Clone, Debug)]
pub enum FromSource {
    /// An image file or a block device.
    Image(PathBuf),
    /// An NBD export: `nbd://HOST[:PORT]/EXPORT` or `nbd+unix:///EXPORT?socket=PATH`.
    Nbd(replog_vault::NbdUri),
}

/// Parses `--from`: an NBD URI when it starts with `nbd://` or `nbd+unix://`, else a path
/// (taken as given, whatever its bytes).
#[derive(Clone, Debug)]
pub struct FromParser;

impl clap::builder::TypedValueParser for FromParser {
    type Value = FromSource;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<FromSource, clap::Error> {
        match value.to_str() {
            Some(s) if replog_vault::NbdUri::is_nbd(s) => replog_vault::NbdUri::parse(s)
                .map(FromSource::Nbd)
                .map_err(|e| {
                    clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("{e}\n"))
                        .with_cmd(cmd)
                }),
            _ => Ok(FromSource::Image(PathBuf::from(value))),
        }
    }
}

/// Arguments of `replog ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The vault directory.
    pub vault: PathBuf,
    /// The disk's name.
    pub name: String,
    /// The disk's current content: an image or device (same size as the disk, or larger with
    /// --grow), or an NBD export (same size), nbd://HOST[:PORT]/EXPORT or
    /// nbd+unix:///EXPORT?socket=PATH.
    #[arg(long, value_parser = FromParser, value_name = "IMAGE|URI")]
    pub from: FromSource,
    /// Grow the disk to the image's size first when the image is larger.
    #[arg(long)]
    pub grow: bool,
    /// The image's format: auto detects it; formats other than raw and fixed VHD need
    /// qemu-img. Not for an NBD export.
    #[arg(long, value_enum, default_value = "auto")]
    pub format: SourceFormat,
    /// NBD only: read just the extents this dirty bitmap (qemu:dirty-bitmap:NAME) marks.
    /// Without it, the whole export is read, except ranges that read as zeros.
    #[arg(long, value_name = "NAME", conflicts_with = "changed_ranges")]
    pub dirty_bitmap: Option<String>,
    /// Images only: read just the ranges this list names (JSON lines {"offset":N,"length":N},
    /// or `rbd diff --format json` output; - reads standard input). Ranges left out are
    /// trusted as unchanged.
    #[arg(long, value_name = "FILE")]
    pub changed_ranges: Option<PathBuf>,
    /// Take a recovery point over all disks once the ingest is durable, in the same command
    /// (as `replog point` would, without a second open of the vault).
    #[arg(long)]
    pub point: bool,
    /// With --point: the source had quiesced its applications.
    #[arg(long, requires = "point")]
    pub app_consistent: bool,
    /// With --point: a label for the point.
    #[arg(long, requires = "point", default_value = "")]
    pub label: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `replog replicate`.
#[derive(Debug, Args)]
pub struct ReplicateArgs {
    /// The vault directory (created with `replog init`; disks it lacks are added).
    pub vault: PathBuf,
    /// Show the replication's status (RPO, last cycle, health) and exit.
    #[arg(long, conflicts_with_all = ["every", "qmp", "disk"])]
    pub status: bool,
    /// The time between the starts of two cycles, e.g. 30s, 5m.
    #[arg(long, value_parser = duration, required_unless_present = "status")]
    pub every: Option<Duration>,
    /// Every this long, freeze the source around the cut (--freeze, --thaw) for an
    /// app-consistent point, e.g. 1h.
    #[arg(long, value_parser = duration, requires = "freeze")]
    pub app_consistent_every: Option<Duration>,
    /// An RPO above this is a warning, above twice this critical.
    #[arg(long, value_parser = duration)]
    pub rpo_alert: Option<Duration>,
    /// Every this long, ship the newest point to the vault's remote (`replog remote add`), as
    /// `replog sync` does; the status reports the remote's newest point.
    #[arg(long, value_parser = duration)]
    pub sync_every: Option<Duration>,
    /// Stop after this many points.
    #[arg(long)]
    pub cycles: Option<u64>,
    /// Grow a vault disk when its node at the source grew (otherwise the cycle fails, saying so).
    #[arg(long)]
    pub grow: bool,
    /// The QMP socket of the running QEMU or qemu-storage-daemon.
    #[arg(long, value_name = "SOCKET", required_unless_present = "status")]
    pub qmp: Option<PathBuf>,
    /// A disk to protect: the vault's NAME for it and QEMU's block NODE. Repeat for each disk;
    /// all of them are in every point.
    #[arg(long, value_name = "NAME=NODE", value_parser = disk_node, required_unless_present = "status")]
    pub disk: Vec<(String, String)>,
    /// The Unix socket of the NBD server QEMU already runs; without it, replog starts one on a
    /// private socket.
    #[arg(long, value_name = "SOCKET")]
    pub nbd_socket: Option<PathBuf>,
    /// Run before an app-consistent cut (fsfreeze, virsh domfsfreeze, the guest agent).
    #[arg(long, value_name = "CMD")]
    pub freeze: Option<String>,
    /// Run right after an app-consistent cut.
    #[arg(long, value_name = "CMD", requires = "freeze")]
    pub thaw: Option<String>,
    /// Run per disk after the cut, before it is read (REPLOG_DISK, REPLOG_URI in the
    /// environment).
    #[arg(long, value_name = "CMD")]
    pub pre_point: Option<String>,
    /// Run per disk after the point is durable (REPLOG_DISK, REPLOG_URI, REPLOG_POINT).
    #[arg(long, value_name = "CMD")]
    pub post_point: Option<String>,
    /// How long a hook may run before it is killed.
    #[arg(long, value_parser = duration, default_value = "60s")]
    pub hook_timeout: Duration,
    /// Keep a Prometheus textfile here (replaced atomically after every cycle).
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,
    /// One line of JSON per cycle (or the status as JSON).
    #[arg(long)]
    pub json: bool,
}

fn duration(text: &str) -> Result<Duration, String> {
    replog_vault::replicate::parse_duration(text)
}

fn disk_node(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, node)) if !name.is_empty() && !node.is_empty() => {
            Ok((name.to_owned(), node.to_owned()))
        }
        _ => Err(format!(
            "{text:?} is not NAME=NODE (the vault's disk name and QEMU's node)"
        )),
    }
}

/// Arguments of `replog point`.
#[derive(Debug, Args)]
pub struct PointArgs {
    /// The vault directory.
    pub vault: PathBuf,
    /// The source had quiesced its applications.
    #[arg(long)]
    pub app_consistent: bool,
    /// A label for the point.
    #[arg(long, default_value = "")]
    pub label: String,
    /// Print the point as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `replog points`.
#[derive(Debug, Args)]
pub struct PointsArgs {
    /// The vault directory, or a remote: s3://BUCKET/PREFIX, az://CONTAINER/PREFIX.
    pub vault: PathBuf,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `replog inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The vault directory, or a remote: s3://BUCKET/PREFIX, az://CONTAINER/PREFIX.
    pub vault: PathBuf,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `replog dump`.
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// The vault directory, or a remote: s3://BUCKET/PREFIX, az://CONTAINER/PREFIX.
    pub vault: PathBuf,
    /// Only this segment id.
    #[arg(long)]
    pub segment: Option<u64>,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `replog verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The vault directory, or a remote: s3://BUCKET/PREFIX, az://CONTAINER/PREFIX.
    pub vault: PathBuf,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
    /// Also refuse (exit 2) unless the vault reaches point N, and with N:CHAIN unless point N
    /// has that chain hash (as `replog points --json` showed it when it was noted): with the
    /// chain proven, the history up to the point is the one that was noted.
    #[arg(long, value_name = "N[:CHAIN]", value_parser = parse_expected_point)]
    pub expect_point: Option<replog_vault::ExpectedPoint>,
}

/// Arguments of `replog checkpoint`.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// The vault directory.
    pub vault: PathBuf,
    /// Index the newest sealed segment that ends at or before this LSN instead.
    #[arg(long)]
    pub at_lsn: Option<u64>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `replog sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The vault directory.
    pub vault: PathBuf,
    /// Chunks (4 MiB) uploaded at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Seal the open segment first, so the newest point is uploaded too (takes the writer
    /// lock: refused while another writer has the vault open).
    #[arg(long)]
    pub seal: bool,
    /// Read back every remote chunk of every local file, not only new ones, and replace
    /// any that is damaged or missing.
    #[arg(long)]
    pub scrub: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `replog torture`.
#[derive(Debug, Args)]
pub struct TortureArgs {
    /// The vault directory.
    pub vault: PathBuf,
    /// The disk to write.
    pub name: String,
    /// Seed of the operation sequence.
    #[arg(long)]
    pub seed: u64,
    /// Stop after this many operations.
    #[arg(long, default_value_t = u64::MAX)]
    pub ops: u64,
}

/// Arguments of `replog demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where to put the demo (a new or empty directory); a fresh temporary one by default.
    pub dir: Option<PathBuf>,
}

/// Arguments of `replog completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `replog man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The directory to write into; created if missing.
    pub dir: PathBuf,
}

/// Arguments of `replog bench resolve`.
#[derive(Debug, Args)]
pub struct BenchResolveArgs {
    /// The vault directory.
    pub vault: PathBuf,
    /// The heap each view's extent maps may take; a larger view is layered over a checkpoint
    /// searched on disk (0: always).
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub memory_limit: u64,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `replog bench read`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").args(["point", "latest"]).required(true)))]
pub struct BenchReadArgs {
    /// The vault directory.
    pub vault: PathBuf,
    /// The point to read.
    #[arg(long)]
    pub point: Option<u64>,
    /// Read the newest point.
    #[arg(long)]
    pub latest: bool,
    /// The heap the point's extent maps may take; a larger view is layered over a checkpoint
    /// searched on disk (0: always).
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub memory_limit: u64,
    /// The order journal pieces are read in: `journal` sets the small ones aside and reads
    /// them sorted by their place in the journal; `auto` does so for a view past the memory
    /// limit or of at least 2^20 pieces, as failover does.
    #[arg(long, value_enum, default_value = "auto")]
    pub order: Order,
    /// Where the journal-order sort writes its scratch files (49 bytes a piece set aside):
    /// the system's temporary directory by default.
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The order `bench read` reads journal pieces in.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Order {
    /// Journal order for large views, disk order otherwise.
    Auto,
    /// Every piece where the walk in disk order meets it.
    Disk,
    /// Small journal pieces sorted by their place in the journal.
    Journal,
}

/// Arguments of `replog bench write`.
#[derive(Debug, Args)]
pub struct BenchWriteArgs {
    /// The vault directory; created with a disk big enough if it does not exist.
    pub vault: PathBuf,
    /// Sequential or random offsets.
    #[arg(long, value_enum, default_value = "seq")]
    pub pattern: Pattern,
    /// Size of each write.
    #[arg(long, default_value = "1MiB", value_parser = parse_bytes)]
    pub block: u64,
    /// Bytes to write in all.
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub total: u64,
    /// Take a recovery point after this many bytes.
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    pub point_every: u64,
    /// Size of the disk when it is created (default: --total).
    #[arg(long, value_parser = parse_bytes)]
    pub disk_size: Option<u64>,
    /// Compression of a vault this command creates.
    #[arg(long, value_enum, default_value = "none")]
    pub compression: CompressionArg,
    /// Payload: random, zero, or a file whose first 16 MiB are cycled.
    #[arg(long, default_value = "random")]
    pub data: String,
    /// Staging buffers handed to the disk at once (memory: this + 1 buffers).
    #[arg(long, default_value_t = 4)]
    pub in_flight: usize,
    /// Size of each staging buffer.
    #[arg(long, default_value = "8MiB", value_parser = parse_bytes)]
    pub buffer: u64,
    /// Write the journal with O_DIRECT: true or false (default false; falls back with a
    /// note where the filesystem refuses it).
    #[arg(long)]
    pub direct: Option<bool>,
    /// Reserve each segment's space when it is created, when writing through the page
    /// cache: true or false (default true).
    #[arg(long)]
    pub preallocate: Option<bool>,
    /// Take points without waiting, waiting only when more than this many are pending
    /// (0: every point waits; group commit shows with more).
    #[arg(long, default_value_t = 0)]
    pub points_in_flight: usize,
    /// Hand this many writes to the writer at once (`write_many`: compression and checksums
    /// in parallel).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `replog disk add`.
#[derive(Debug, Args)]
pub struct DiskAddArgs {
    /// The vault directory.
    pub vault: PathBuf,
    /// The disk's name: 1-64 of A-Z a-z 0-9 . _ -
    pub name: String,
    /// Seed the disk from this image (raw, VHD, or any format qemu-img reads) or NBD export
    /// (nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH); its size is the disk's size.
    #[arg(
        long,
        conflicts_with = "size",
        required_unless_present = "size",
        value_parser = FromParser,
        value_name = "IMAGE|URI"
    )]
    pub from: Option<FromSource>,
    /// The image's format (default: auto, which detects it); formats other than raw and
    /// fixed VHD need qemu-img.
    #[arg(long, value_enum, requires = "from", conflicts_with = "size")]
    pub format: Option<SourceFormat>,
    /// Size of an empty disk (bytes, or with a suffix: 10GiB, 512M).
    #[arg(long, value_parser = parse_bytes)]
    pub size: Option<u64>,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `replog remote add`.
#[derive(Debug, Args)]
pub struct RemoteAddArgs {
    /// The vault directory.
    pub vault: PathBuf,
    /// s3://BUCKET[/PREFIX] or az://CONTAINER[/PREFIX].
    pub url: String,
    /// Keep at most this many bytes of sealed segments and base images locally; `sync`
    /// evicts the oldest confirmed ones beyond it (0: keep everything).
    #[arg(long, value_parser = parse_bytes, default_value = "0")]
    pub cache_limit: u64,
    /// Remote manifests kept, with every object they need (older ones and what only they
    /// need are deleted by `sync`).
    #[arg(long, default_value_t = 2)]
    pub keep_manifests: u32,
    /// Make the remote immutable (S3 Object Lock): every object a sync uploads from now on
    /// cannot be deleted for this long (30d, 12h, ...; longer when the vault's retention window
    /// is). The bucket must have Object Lock enabled.
    #[arg(long, value_name = "PERIOD", value_parser = parse_lock_period)]
    pub immutable: Option<u64>,
    /// The lock mode of `--immutable`: compliance (nobody can delete early) or governance
    /// (users allowed to bypass governance retention can).
    #[arg(long, value_enum, default_value = "compliance", requires = "immutable")]
    pub lock_mode: LockModeArg,
}

/// S3 Object Lock modes.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LockModeArg {
    /// Nobody, the account's root included, can delete an object or shorten its lock early.
    Compliance,
    /// Users granted s3:BypassGovernanceRetention can, with a bypass header.
    Governance,
}

impl From<LockModeArg> for replog_remote::lock::LockMode {
    fn from(m: LockModeArg) -> Self {
        match m {
            LockModeArg::Compliance => replog_remote::lock::LockMode::Compliance,
            LockModeArg::Governance => replog_remote::lock::LockMode::Governance,
        }
    }
}

/// Arguments of `replog remote show`.
#[derive(Debug, Args)]
pub struct RemoteShowArgs {
    /// The vault directory.
    pub vault: PathBuf,
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Serve a recovery point (read-only, or writable through a discarded overlay), or capture
/// writes into the journal, over NBD.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("what").required(true).args(["point", "latest", "capture"])))]
pub struct ServeNbdArgs {
    /// The vault directory.
    pub vault: PathBuf,
    /// Serve the point with this id.
    #[arg(long)]
    pub point: Option<u64>,
    /// Serve the newest point.
    #[arg(long)]
    pub latest: bool,
    /// Serve the latest state, writable: every write becomes a journal record.
    #[arg(long, conflicts_with = "overlay")]
    pub capture: bool,
    /// Make the point writable with a copy-on-write overlay discarded when the server exits.
    #[arg(long)]
    pub overlay: bool,
    /// Where the overlay's (unlinked, sparse) files go; the system's temporary directory by
    /// default.
    #[arg(long, requires = "overlay")]
    pub overlay_dir: Option<PathBuf>,
    /// TCP address to listen on.
    #[arg(long, default_value = "127.0.0.1:10809", conflicts_with = "unix")]
    pub listen: String,
    /// Listen on this Unix socket instead of TCP.
    #[arg(long)]
    pub unix: Option<PathBuf>,
    /// Clients served at once; more are refused with a message.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_clients: u32,
    /// Seconds a client has to finish the whole handshake; one still negotiating then is cut.
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub handshake_timeout: u64,
    /// When every slot is taken and a new client arrives, a negotiated client that has sent
    /// nothing for this many seconds gives its slot to it (0: never). No client is cut while a
    /// slot is free, so a VM booted from an export may idle as long as it likes.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub idle_timeout: u64,
    /// The heap the point's extent maps may take (e.g. 512MiB); past it the view keeps only the
    /// journal after a checkpoint in memory and searches the checkpoint on disk (0: always).
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub memory_limit: u64,
}
