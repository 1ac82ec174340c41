//! Running `nft` for our table: `tokio::process`, never blocking the
//! runtime, with a deadline (the program is killed when it passes).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::render::render_replace;
use super::spec::{Element, Skeleton};
use super::DEFAULT_TABLE;
use crate::cmd;
use crate::error::{Error, Result};

/// The default deadline of one `nft` run.
pub const DEFAULT_NFT_TIMEOUT: Duration = Duration::from_secs(30);

/// What the `nft` runs of one apply cost: the figures the agent logs and
/// exports per sync.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NftStats {
    /// Runs of `nft`.
    pub executions: u32,
    /// Bytes fed to `nft` on stdin.
    pub input_bytes: u64,
    /// Wall time of the runs, start to exit.
    pub duration: Duration,
    /// Element transactions sent over nfnetlink instead of `nft`
    /// ([`super::netlink`]).
    pub netlink_transactions: u32,
    /// Bytes of those transactions (netlink messages).
    pub netlink_bytes: u64,
    /// Wall time of those transactions, send to the kernel's answer.
    pub netlink_duration: Duration,
    /// Element updates the kernel refused (or that failed), repaired in
    /// the same apply by replacing the whole table.
    pub element_fallbacks: u32,
}

impl NftStats {
    /// Adds another apply's figures.
    pub fn add(&mut self, o: NftStats) {
        self.executions += o.executions;
        self.input_bytes += o.input_bytes;
        self.duration += o.duration;
        self.netlink_transactions += o.netlink_transactions;
        self.netlink_bytes += o.netlink_bytes;
        self.netlink_duration += o.netlink_duration;
        self.element_fallbacks += o.element_fallbacks;
    }
}

/// Runs `nft` for our one table.
#[derive(Debug, Clone)]
pub struct Nft {
    program: PathBuf,
    table: String,
    timeout: Duration,
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
            timeout: DEFAULT_NFT_TIMEOUT,
        }
    }

    /// The same with another deadline per run.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Our table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Runs `nft args...` with `script` on stdin, counting it in `stats`.
    /// A non-zero exit is [`Error::Nft`] (with nft's stderr), a run past
    /// the deadline [`Error::Timeout`] (the process is killed).
    pub async fn run_script(
        &self,
        op: &str,
        args: &[&str],
        script: &str,
        stats: &mut NftStats,
    ) -> Result<()> {
        let t = Instant::now();
        stats.executions += 1;
        stats.input_bytes += script.len() as u64;
        let res = cmd::run_async(&self.program, args, script.as_bytes(), self.timeout).await;
        stats.duration += t.elapsed();
        let out = res?;
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

    /// Runs one transaction (`nft -f -`).
    pub async fn transaction(&self, op: &str, script: &str, stats: &mut NftStats) -> Result<()> {
        self.run_script(
            &format!("{op} table inet {}", self.table),
            &["-f", "-"],
            script,
            stats,
        )
        .await
    }

    /// Has the kernel check a full table without committing (`nft -c`).
    pub async fn check<'a>(
        &self,
        skeleton: &Skeleton,
        elements: impl Iterator<Item = &'a Element>,
    ) -> Result<()> {
        validated(&self.table, skeleton)?;
        let script = render_replace(&self.table, skeleton, elements);
        self.run_script(
            &format!("check table inet {}", self.table),
            &["-c", "-f", "-"],
            &script,
            &mut NftStats::default(),
        )
        .await
    }

    /// Deletes our table if it exists (and nothing else).
    pub async fn delete(&self) -> Result<()> {
        let t = &self.table;
        let script = format!("table inet {t} {{}}\ndelete table inet {t}\n");
        self.transaction("delete", &script, &mut NftStats::default())
            .await
    }

    /// Whether our table exists.
    pub async fn exists(&self) -> Result<bool> {
        Ok(self.list().await?.is_some())
    }

    /// `nft list table inet <ours>` text, when it exists.
    pub async fn list(&self) -> Result<Option<String>> {
        let out = cmd::run_async(
            &self.program,
            &["list", "table", "inet", &self.table],
            b"",
            self.timeout,
        )
        .await?;
        Ok(out
            .status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
    }
}

/// The skeleton's problems as an error, before anything runs.
pub(crate) fn validated(table: &str, s: &Skeleton) -> Result<()> {
    s.validate().map_err(|stderr| Error::Nft {
        op: format!("render table inet {table}"),
        status: "not run".to_owned(),
        stderr,
    })
}
