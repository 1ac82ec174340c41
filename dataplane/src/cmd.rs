//! Running the few helper programs we need (`nft`, `modprobe`).
//!
//! They are short-lived and are started from the calling thread, so they
//! inherit its network namespace. [`run`] blocks (start-up checks only);
//! [`run_async`] is what the sync path uses.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::error::{Error, Result};

/// Runs `program args...`, feeding `stdin` when given; returns its output
/// whatever the exit status.
pub(crate) fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<Output> {
    let spawn_err = |source| Error::Spawn {
        program: program.to_owned(),
        source,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A failed write shows up as a failed exit status with nft's reason.
        let _ = pipe.write_all(text.as_bytes());
    }
    child.wait_with_output().map_err(spawn_err)
}

/// stderr as text, trimmed.
pub(crate) fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// Runs `program args...` without blocking the runtime (`tokio::process`),
/// feeding `stdin`, and kills it when it has not finished within `deadline`
/// ([`Error::Timeout`]). Returns its output whatever the exit status.
pub(crate) async fn run_async(
    program: &Path,
    args: &[&str],
    stdin: &[u8],
    deadline: Duration,
) -> Result<Output> {
    use tokio::io::AsyncWriteExt as _;
    let spawn_err = |source| Error::Spawn {
        program: program.to_owned(),
        source,
    };
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropped on timeout: the child is killed (SIGKILL) and reaped.
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_err)?;
    let mut pipe = child.stdin.take();
    let run = async move {
        let feed = async {
            if let Some(p) = pipe.as_mut() {
                // A failed write shows up as a failed exit status with nft's
                // reason.
                let _ = p.write_all(stdin).await;
            }
            drop(pipe.take());
        };
        let (_, out) = tokio::join!(feed, child.wait_with_output());
        out
    };
    match tokio::time::timeout(deadline, run).await {
        Ok(out) => out.map_err(spawn_err),
        Err(_) => Err(Error::Timeout {
            program: program.to_owned(),
            after: deadline,
        }),
    }
}
