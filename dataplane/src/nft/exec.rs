//! Running `nft` for our table.

use std::path::{Path, PathBuf};

use super::spec::FilterSpec;
use super::update::{render_update, FilterChange};
use super::DEFAULT_TABLE;
use crate::cmd;
use crate::error::{Error, Result};

/// Runs `nft` for our one table.
#[derive(Debug, Clone)]
pub struct Nft {
    program: PathBuf,
    table: String,
}

impl Default for Nft {
    fn default() -> Self {
        Nft::new("nft", DEFAULT_TABLE)
    }
}

impl Nft {
    /// `program` is the nft binary; `table` our table's name (family inet).
    pub fn new(program: impl AsRef<Path>, table: impl Into<String>) -> Self {
        Nft {
            program: program.as_ref().to_owned(),
            table: table.into(),
        }
    }

    /// Our table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    pub(super) fn run_script(&self, op: &str, args: &[&str], script: &str) -> Result<()> {
        let out = cmd::run(&self.program, args, Some(script))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(Error::Nft {
                op: op.to_owned(),
                status: out.status.to_string(),
                stderr: cmd::stderr_of(&out),
            })
        }
    }

    /// Replaces our table with `spec`, in one transaction.
    pub fn apply(&self, spec: &FilterSpec) -> Result<()> {
        self.validated(spec)?;
        let script = spec.render_replace(&self.table);
        self.run_script(
            &format!("replace table inet {}", self.table),
            &["-f", "-"],
            &script,
        )
    }

    /// Moves our table from `old` (what the kernel holds) to `new`: element
    /// changes only when the rules are the same (one transaction), else a
    /// full replacement. Returns what was done.
    pub fn update(&self, old: &FilterSpec, new: &FilterSpec) -> Result<FilterChange> {
        self.validated(new)?;
        match render_update(old, new, &self.table) {
            Some(script) if script.is_empty() => Ok(FilterChange::Unchanged),
            Some(script) => {
                let op = format!("update table inet {}", self.table);
                match self.run_script(&op, &["-f", "-"], &script) {
                    Ok(()) => Ok(FilterChange::Elements),
                    // The table was not what we thought: rewrite it whole.
                    Err(_) => self.apply(new).map(|()| FilterChange::Table),
                }
            }
            None => self.apply(new).map(|()| FilterChange::Table),
        }
    }

    /// Has the kernel check `spec` without committing (`nft -c`).
    pub fn check(&self, spec: &FilterSpec) -> Result<()> {
        self.validated(spec)?;
        let script = spec.render_replace(&self.table);
        self.run_script(
            &format!("check table inet {}", self.table),
            &["-c", "-f", "-"],
            &script,
        )
    }

    fn validated(&self, spec: &FilterSpec) -> Result<()> {
        spec.validate().map_err(|stderr| Error::Nft {
            op: format!("render table inet {}", self.table),
            status: "not run".to_owned(),
            stderr,
        })
    }

    /// Deletes our table if it exists (and nothing else).
    pub fn delete(&self) -> Result<()> {
        let t = &self.table;
        let script = format!("table inet {t} {{}}\ndelete table inet {t}\n");
        self.run_script(&format!("delete table inet {t}"), &["-f", "-"], &script)
    }

    /// Whether our table exists.
    pub fn exists(&self) -> Result<bool> {
        let out = cmd::run(&self.program, &["list", "table", "inet", &self.table], None)?;
        Ok(out.status.success())
    }

    /// `nft list table inet <ours>` text, when it exists.
    pub fn list(&self) -> Result<Option<String>> {
        let out = cmd::run(&self.program, &["list", "table", "inet", &self.table], None)?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
    }
}
