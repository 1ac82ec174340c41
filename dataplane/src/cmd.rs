//! Running the few helper programs we need (`nft`, `modprobe`).
//!
//! They are short-lived and run from the calling thread, so they inherit its
//! network namespace.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

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
