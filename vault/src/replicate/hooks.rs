//! Commands an operator runs around each point: `freeze` and `thaw` bracket the cut of an
//! app-consistent point (`fsfreeze`, `virsh domfsfreeze`, the guest agent), `pre_point` runs
//! once per disk after the cut and before its view is read, `post_point` once per disk after
//! the point is durable. Each runs under `sh -c` with the context in its environment
//! (`REPLOG_VAULT`, `REPLOG_CYCLE`, and for the per-disk hooks `REPLOG_DISK`, `REPLOG_URI`,
//! and after the point `REPLOG_POINT`), and is killed if it outlives its deadline: a hook that
//! hangs must not hold the source frozen or the cycle stuck.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The hooks of a replication; each is a shell command line.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    /// Quiesces the source before an app-consistent cut.
    pub freeze: Option<String>,
    /// Resumes it after the cut (always run after a freeze was attempted).
    pub thaw: Option<String>,
    /// Runs per disk after the cut, before its view is read.
    pub pre_point: Option<String>,
    /// Runs per disk after the point is durable.
    pub post_point: Option<String>,
    /// How long a hook may run before it is killed.
    pub timeout: Duration,
}

/// What a hook is told.
#[derive(Clone, Debug, Default)]
pub struct HookContext {
    /// The vault.
    pub vault: PathBuf,
    /// The cycle's number.
    pub cycle: u64,
    /// The disk, for per-disk hooks.
    pub disk: Option<String>,
    /// The disk's view, for per-disk hooks.
    pub uri: Option<String>,
    /// The point, once taken.
    pub point: Option<u64>,
}

impl Hooks {
    /// Runs `command` (if set) with `context`; an error says which hook failed and how.
    pub fn run(
        &self,
        which: &str,
        command: Option<&str>,
        context: &HookContext,
    ) -> Result<(), String> {
        let Some(command) = command else {
            return Ok(());
        };
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .env("REPLOG_VAULT", &context.vault)
            .env("REPLOG_CYCLE", context.cycle.to_string())
            .stdin(Stdio::null());
        for (key, value) in [
            ("REPLOG_DISK", context.disk.clone()),
            ("REPLOG_URI", context.uri.clone()),
            ("REPLOG_POINT", context.point.map(|p| p.to_string())),
        ] {
            if let Some(value) = value {
                cmd.env(key, value);
            }
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("the {which} hook {command:?} could not start: {e}"))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!("the {which} hook {command:?} failed ({status})"));
                }
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "the {which} hook {command:?} ran longer than {:?} and was killed",
                        self.timeout
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(format!("the {which} hook {command:?}: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(timeout_ms: u64) -> Hooks {
        Hooks {
            timeout: Duration::from_millis(timeout_ms),
            ..Hooks::default()
        }
    }

    #[test]
    fn a_hook_sees_its_context_and_its_failure_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let context = HookContext {
            vault: "/v".into(),
            cycle: 4,
            disk: Some("os".into()),
            uri: Some("nbd+unix:///x?socket=/s".into()),
            point: Some(12),
        };
        let cmd = format!(
            "echo \"$REPLOG_VAULT $REPLOG_CYCLE $REPLOG_DISK $REPLOG_URI $REPLOG_POINT\" > {}",
            out.display()
        );
        hooks(10_000)
            .run("post-point", Some(&cmd), &context)
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "/v 4 os nbd+unix:///x?socket=/s 12\n"
        );
        let e = hooks(10_000)
            .run("freeze", Some("exit 3"), &context)
            .unwrap_err();
        assert!(e.contains("freeze") && e.contains("exit status: 3"), "{e}");
        assert_eq!(hooks(10).run("thaw", None, &context), Ok(()));
    }

    #[test]
    fn a_hook_that_hangs_is_killed_at_its_deadline() {
        let e = hooks(200)
            .run("freeze", Some("sleep 30"), &HookContext::default())
            .unwrap_err();
        assert!(e.contains("killed"), "{e}");
    }
}
