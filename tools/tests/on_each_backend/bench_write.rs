//! `replog bench write` with the writer pipeline's options: buffers in flight, direct I/O,
//! preallocation, pipelined points and batches. Each run must report what it used, take every
//! point it was asked for, and leave a vault that `verify` finds intact. Figures are never
//! asserted (machines are noisy); that is `benches/compare.py`'s job.

use serde_json::Value;

fn replog(args: &[&str]) -> (i32, String, String) {
    let out = super::replog_command()
        .args(args)
        .output()
        .expect("replog runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bench_write_reports_its_pipeline_options_and_leaves_an_intact_vault() {
    let cases: &[&[&str]] = &[
        &["--in-flight", "1", "--buffer", "64KiB"],
        &["--in-flight", "3", "--buffer", "64KiB", "--direct", "true"],
        &["--points-in-flight", "3", "--preallocate", "false"],
        &["--batch", "8", "--compression", "lz4", "--data", "zero"],
        &[
            "--pattern",
            "rand",
            "--batch",
            "4",
            "--direct",
            "true",
            "--points-in-flight",
            "2",
        ],
    ];
    for backend in ["sync", "uring"] {
        for (i, extra) in cases.iter().enumerate() {
            let tmp = tempfile::tempdir().unwrap();
            let vault = tmp.path().join("v");
            let v = vault.to_str().unwrap();
            let mut args = vec![
                "--backend",
                backend,
                "bench",
                "write",
                v,
                "--block",
                "16KiB",
                "--total",
                "2MiB",
                "--point-every",
                "128KiB",
                "--json",
            ];
            args.extend_from_slice(extra);
            let (code, stdout, stderr) = replog(&args);
            if backend == "uring" && stderr.contains("io_uring is unavailable") {
                eprintln!("note: io_uring unavailable here; skipped");
                break;
            }
            assert_eq!(code, 0, "{backend} case {i}: {stderr}");
            let j: Value = serde_json::from_str(&stdout).expect("one JSON object");
            assert_eq!(j["points"], 16, "{backend} case {i}: {j}");
            assert_eq!(j["bytes"], 2 << 20);
            assert!(j["peak_rss_bytes"].as_u64().unwrap() > 0);
            let direct_asked = extra.windows(2).any(|w| w == ["--direct", "true"]);
            assert!(
                j["direct"].as_bool().unwrap() == direct_asked || !j["io_note"].is_null(),
                "{backend} case {i}: direct is used as asked, or a note says why not: {j}"
            );
            let (code, out, err) = replog(&["--backend", backend, "verify", v]);
            assert_eq!(code, 0, "{backend} case {i}: verify: {out}{err}");
            // `bench read` reads the newest point through (every byte verified), in memory and
            // layered, and reports the same data either way.
            let mut data = Vec::new();
            for limit in ["1GiB", "0"] {
                let (code, out, err) = replog(&[
                    "--backend",
                    backend,
                    "bench",
                    "read",
                    v,
                    "--latest",
                    "--memory-limit",
                    limit,
                    "--json",
                ]);
                assert_eq!(code, 0, "{backend} case {i}: bench read: {err}");
                let r: Value = serde_json::from_str(&out).expect("one JSON object");
                assert!(r["disk_bytes"].as_u64().unwrap() >= 2 << 20, "{r}");
                assert!(r["data_bytes"].as_u64().unwrap() <= 2 << 20, "{r}");
                data.push(r["data_bytes"].clone());
            }
            assert_eq!(data[0], data[1], "{backend} case {i}");
        }
    }
}
