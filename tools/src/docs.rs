//! `replog completions SHELL` and `replog man DIR`: shell completion scripts and man pages,
//! generated from the same clap definitions as the parser, so they never drift from it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::{CmdResult, EXIT_OK, Failure};

/// Prints the completion script for `shell` to standard output.
pub fn completions(shell: clap_complete::Shell) -> CmdResult {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "replog", &mut script);
    std::io::stdout()
        .write_all(&script)
        .map_err(|e| Failure::new(format!("cannot write the completion script: {e}")))?;
    Ok(EXIT_OK)
}

/// Writes `replog.1` and one page per command (`replog-failover.1`, `replog-disk-add.1`, ...)
/// into `dir`, creating it if missing; prints each path written.
pub fn man_pages(dir: &Path) -> CmdResult {
    std::fs::create_dir_all(dir).map_err(|e| {
        Failure::new(format!(
            "{}: cannot create the directory: {e}",
            dir.display()
        ))
    })?;
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_pages(&cmd, dir, &mut written)?;
    for path in written {
        println!("{path}");
    }
    Ok(EXIT_OK)
}

/// Renders the page of `cmd` and of every visible subcommand below it. After `build`, clap
/// names each subcommand after its parents (`replog-disk-add`), which becomes the file name.
fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<String>) -> Result<(), Failure> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    let man = clap_mangen::Man::new(cmd.clone());
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page).map_err(|e| {
        Failure::new(format!(
            "{}: cannot render the man page: {e}",
            path.display()
        ))
    })?;
    write_file(&path, &page)?;
    written.push(path.display().to_string());
    Ok(())
}

/// Replaces `path` with `bytes`, never through a symbolic link planted at that name.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    let fail = |e: std::io::Error| Failure::new(format!("{}: cannot write: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(fail)?;
    file.write_all(bytes).map_err(fail)
}
