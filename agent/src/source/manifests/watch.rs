//! Following the directory: inotify (non-blocking, on the source's task)
//! for prompt changes, a periodic full read for what inotify cannot see.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;

use super::{is_manifest_name, ManifestIndex};
use crate::source::Change;

/// Names inotify reported and not yet read; more than this and the source
/// lists the whole directory instead.
pub(super) const MAX_PENDING_NAMES: usize = 4096;

/// What inotify reported since the source last looked.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Pending {
    /// Entries of the directory that changed.
    pub(super) names: BTreeSet<OsString>,
    /// Events were lost (queue overflow) or concern more than one entry
    /// (a directory, the watch itself): list the whole directory.
    pub(super) rescan: bool,
}

impl Pending {
    /// Notes one inotify event.
    pub(super) fn note(&mut self, mask: nix::sys::inotify::AddWatchFlags, name: Option<OsString>) {
        use nix::sys::inotify::AddWatchFlags as F;
        let whole =
            F::IN_Q_OVERFLOW | F::IN_IGNORED | F::IN_ISDIR | F::IN_DELETE_SELF | F::IN_MOVE_SELF;
        match name {
            Some(name) if !mask.intersects(whole) => {
                if self.rescan {
                    return;
                }
                if self.names.len() >= MAX_PENDING_NAMES {
                    self.names.clear();
                    self.rescan = true;
                } else {
                    self.names.insert(name);
                }
            }
            _ => {
                self.names.clear();
                self.rescan = true;
            }
        }
    }

    /// Whether the whole directory must be read: events were lost, or an
    /// entry that is not a manifest file is now a symlink. (ConfigMap
    /// volumes swap a `..data` symlink: every file behind it may have
    /// changed without an event of its own.)
    pub(super) fn needs_full(&self, dir: &Path) -> bool {
        self.rescan
            || self.names.iter().any(|n| {
                !is_manifest_name(n)
                    && std::fs::symlink_metadata(dir.join(n))
                        .is_ok_and(|m| m.file_type().is_symlink())
            })
    }
}

/// The inotify descriptor, registered with tokio's reactor.
struct InotifyFd(nix::sys::inotify::Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Directory change notifications (inotify, non-blocking, read on the
/// source's own task), when available: the names of the entries that
/// changed, so that only those are read. No thread: the source's task is
/// the only reader, so the agent's shutdown ends it with the source.
struct DirWatch {
    fd: AsyncFd<InotifyFd>,
    /// Read from inotify and not yet taken.
    pending: Pending,
    /// inotify failed: polling only from now on.
    failed: bool,
}

impl DirWatch {
    fn new(dir: &Path) -> Option<Self> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok()?;
        // Not IN_MODIFY: a file written in place is read at IN_CLOSE_WRITE,
        // not half-written.
        ino.add_watch(
            dir,
            AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_ATTRIB
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF,
        )
        .ok()?;
        // Deprecated because a `T: AsRawFd` may not own its fd; ours owns
        // it (the `Inotify` moves in), so the fd lives exactly as long as
        // the registration (the replacement needs `unsafe`, forbidden here).
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(InotifyFd(ino), Interest::READABLE).ok()?;
        Some(Self {
            fd,
            pending: Pending::default(),
            failed: false,
        })
    }

    /// Reads every queued event without waiting; whether there was any.
    fn read_queued(&mut self) -> bool {
        let mut any = false;
        while !self.failed {
            match self.fd.get_ref().0.read_events() {
                Ok(events) => {
                    for e in events {
                        any = true;
                        self.pending.note(e.mask, e.name);
                    }
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "inotify failed; polling only");
                    self.failed = true;
                }
            }
        }
        any
    }

    /// What inotify reported, if anything, without waiting.
    fn try_take(&mut self) -> Option<Pending> {
        self.read_queued()
            .then(|| std::mem::take(&mut self.pending))
    }

    /// Waits for the next change notification (forever once inotify has
    /// failed) and takes what it reported. Cancel-safe: what was read
    /// stays for the next call.
    async fn changed(&mut self) -> Pending {
        loop {
            if self.read_queued() {
                return std::mem::take(&mut self.pending);
            }
            if self.failed {
                std::future::pending::<()>().await;
            }
            match self.fd.readable().await {
                Ok(mut ready) => ready.clear_ready(),
                Err(e) => {
                    tracing::warn!(error = %e, "inotify failed; polling only");
                    self.failed = true;
                }
            }
        }
    }
}

/// Follows `dir`: reads it now, then the files inotify names as they
/// change (the whole directory when events were lost or a symlink that is
/// not a manifest changed), and the whole directory at least every
/// `interval` (changes that inotify does not see, e.g. files replaced
/// behind a symlink in another directory), sending the differences to
/// `tx` until it closes. Only new or changed files are parsed, one at a
/// time; see [`ManifestIndex`] for the rules.
pub async fn run_manifests(dir: PathBuf, interval: Duration, tx: mpsc::Sender<Change>) {
    let mut index = ManifestIndex::default();
    let mut last_error: Option<String> = None;
    let mut watch = DirWatch::new(&dir);
    if watch.is_none() {
        tracing::warn!(dir = %dir.display(), "no inotify on the manifest directory; polling only");
    }
    // What to read next: `None` for the whole directory.
    let mut next: Option<Pending> = None;
    let mut full_due = tokio::time::Instant::now();
    let mut again = false;
    loop {
        let named = next.take().filter(|p| index.listed && !p.needs_full(&dir));
        let report = match named {
            Some(p) => {
                let names: Vec<OsString> = p.names.into_iter().collect();
                Ok(index.refresh_files(&dir, &names, &tx).await)
            }
            None => {
                full_due = tokio::time::Instant::now() + interval;
                // Files named meanwhile are read between the stats; news
                // that need a full read make this one start over.
                let (w, dir, again) = (&mut watch, &dir, &mut again);
                index
                    .refresh_with(dir, &tx, || {
                        let p = w.as_mut()?.try_take()?;
                        if p.needs_full(dir) {
                            *again = true;
                            return None;
                        }
                        Some(p.names.into_iter().collect())
                    })
                    .await
            }
        };
        match report {
            Ok(report) => {
                last_error = None;
                if report.closed {
                    return;
                }
                if report.parsed > 0 {
                    tracing::debug!(
                        checked = report.checked,
                        parsed = report.parsed,
                        changes = report.sent,
                        objects = index.len(),
                        "manifests read"
                    );
                }
            }
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(&msg) {
                    tracing::warn!(error = %msg, "cannot read manifests; keeping the previous state");
                    last_error = Some(msg);
                }
            }
        }
        if std::mem::take(&mut again) {
            continue;
        }
        match &mut watch {
            Some(w) => {
                tokio::select! {
                    p = w.changed() => next = Some(p),
                    _ = tokio::time::sleep_until(full_due) => {}
                }
            }
            None => tokio::time::sleep_until(full_due).await,
        }
    }
}
