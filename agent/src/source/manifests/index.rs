//! What a followed directory defines, file by file: only new or changed
//! files are parsed, and only the differences are sent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::parse::{parse_file, Doc};
use super::{is_manifest_name, manifest_names, read_file, stat_stamp, ManifestError, Stamp};
use crate::source::{selected, Change, Kind, Object, ObjectKey};

/// What a manifest file gave at its last successful parse: its stamp and
/// the kind, key and document hash of each object, not the objects.
#[derive(Debug)]
struct IndexedFile {
    stamp: Stamp,
    objects: Vec<(Kind, ObjectKey, u64)>,
}

impl IndexedFile {
    fn defines(&self, kind: Kind, key: &ObjectKey) -> bool {
        self.objects.iter().any(|(k, o, _)| *k == kind && o == key)
    }
}

/// An object whose file no longer defines it: deleted at the end of a
/// refresh unless another file takes it over.
type Orphan = (Kind, ObjectKey, Arc<Path>);

/// Follows a manifest directory without keeping its objects: per file, the
/// stamp and per object a hash; per object key, the file whose version the
/// sync loop has. A refresh parses only new or changed files, one at a
/// time, and sends what changed as it goes: [`ManifestIndex::refresh`]
/// looks at the whole directory, [`ManifestIndex::refresh_files`] only at
/// the files an inotify event named.
///
/// Rules: a file that cannot be read or parsed is skipped as a whole and
/// keeps what it gave before (a half-written file deletes nothing), and is
/// not parsed again until it changes. Objects that selectors would drop
/// are not sent. An object defined in several files comes from the first
/// file in name order. Objects a file no longer defines are deleted (or
/// taken from another file that still defines them).
#[derive(Debug, Default)]
pub struct ManifestIndex {
    files: HashMap<Arc<Path>, IndexedFile>,
    /// Per object: the file its current version comes from, and its hash.
    sent: HashMap<(Kind, ObjectKey), (Arc<Path>, u64)>,
    /// Files that failed to parse, with the stamp that failed.
    failed: HashMap<PathBuf, Stamp>,
    pub(super) listed: bool,
}

/// How many files a full refresh `stat`s between two looks at inotify's
/// news (~64 x 45 us in the UML benchmark).
pub(super) const STAT_CHUNK: usize = 64;

/// What a [`ManifestIndex::refresh`] or [`ManifestIndex::refresh_files`]
/// did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RefreshReport {
    /// Files looked at (`stat` or read); a full refresh looks at every
    /// manifest file, a refresh of named files only at those.
    pub checked: usize,
    /// Files parsed (new or changed).
    pub parsed: usize,
    /// Files that could not be read or parsed this time, with the error.
    pub errors: Vec<String>,
    /// Changes sent.
    pub sent: usize,
    /// Whether the receiver has gone away.
    pub closed: bool,
}

impl ManifestIndex {
    /// Reads `dir` again and sends what changed to `tx`, then, the first
    /// time, `Listed` for both kinds. Files seen before are `stat`ed and
    /// read again only when their stamp changed; new ones are read at
    /// once. Fails (changing nothing) only when the directory cannot be
    /// listed.
    pub async fn refresh(
        &mut self,
        dir: &Path,
        tx: &mpsc::Sender<Change>,
    ) -> Result<RefreshReport, ManifestError> {
        self.refresh_with(dir, tx, || None).await
    }

    /// [`ManifestIndex::refresh`], asking `between` every [`STAT_CHUNK`]
    /// `stat`s for files that changed meanwhile (inotify's names) and
    /// reading those at once: a change does not wait for the `stat`s of
    /// a whole large directory (tens of microseconds each in a VM).
    pub(super) async fn refresh_with(
        &mut self,
        dir: &Path,
        tx: &mpsc::Sender<Change>,
        mut between: impl FnMut() -> Option<Vec<OsString>>,
    ) -> Result<RefreshReport, ManifestError> {
        let names = manifest_names(dir)?;
        let mut report = RefreshReport::default();
        let mut still: HashSet<&Path> = HashSet::with_capacity(names.len());
        let mut todo: Vec<&Path> = Vec::new();
        let mut stats = 0usize;
        for path in &names {
            report.checked += 1;
            if !self.is_known(path) {
                todo.push(path);
                continue;
            }
            stats += 1;
            if stats.is_multiple_of(STAT_CHUNK) {
                if let Some(changed) = between() {
                    let r = self.refresh_files(dir, &changed, tx).await;
                    report.checked += r.checked;
                    report.parsed += r.parsed;
                    report.sent += r.sent;
                    report.errors.extend(r.errors);
                    if r.closed {
                        report.closed = true;
                        return Ok(report);
                    }
                }
            }
            match stat_stamp(path) {
                Some(stamp) if self.unchanged(path, &stamp) => {
                    still.insert(path);
                }
                Some(_) => {
                    still.insert(path);
                    todo.push(path);
                }
                None => {}
            }
        }
        // Files gone first, so that a file read below can take over their
        // objects in this same refresh. (One not listed but there now was
        // created after the listing and read through `between`.)
        let mut orphans: Vec<Orphan> = Vec::new();
        let gone: Vec<Arc<Path>> = self
            .files
            .keys()
            .filter(|p| !still.contains(&***p) && stat_stamp(p).is_none())
            .cloned()
            .collect();
        for path in gone {
            self.forget(&path, &mut orphans);
        }
        self.failed
            .retain(|p, _| still.contains(p.as_path()) || stat_stamp(p).is_some());
        drop(still);
        for path in todo {
            if !self.load(path, &mut report, &mut orphans, tx).await {
                return Ok(report);
            }
        }
        let first = !self.listed;
        self.listed = true;
        self.settle(orphans, first, &mut report, tx).await;
        Ok(report)
    }

    /// Reads only the files `names` of `dir` (names from inotify events):
    /// each one new or changed is parsed, each one gone has its objects
    /// deleted (or taken from another file), as [`ManifestIndex::refresh`]
    /// would. Names that are not manifest files are ignored. For use after
    /// a first full refresh, which sends `Listed`.
    pub async fn refresh_files(
        &mut self,
        dir: &Path,
        names: &[OsString],
        tx: &mpsc::Sender<Change>,
    ) -> RefreshReport {
        let mut paths: Vec<PathBuf> = names
            .iter()
            .filter(|n| is_manifest_name(n))
            .map(|n| dir.join(n))
            .collect();
        paths.sort();
        paths.dedup();
        let mut report = RefreshReport::default();
        let mut orphans: Vec<Orphan> = Vec::new();
        // Gone ones first, as in a full refresh.
        let mut todo = Vec::with_capacity(paths.len());
        for path in &paths {
            report.checked += 1;
            match stat_stamp(path) {
                Some(stamp) if self.unchanged(path, &stamp) => {}
                Some(_) => todo.push(path.as_path()),
                None => {
                    self.forget(path, &mut orphans);
                    self.failed.remove(path);
                }
            }
        }
        for path in todo {
            if !self.load(path, &mut report, &mut orphans, tx).await {
                return report;
            }
        }
        self.settle(orphans, false, &mut report, tx).await;
        report
    }

    /// How many objects the sync loop has from this directory.
    pub fn len(&self) -> usize {
        self.sent.len()
    }

    /// Whether no object has been sent (or all were deleted).
    pub fn is_empty(&self) -> bool {
        self.sent.is_empty()
    }

    fn is_known(&self, path: &Path) -> bool {
        self.files.contains_key(path) || self.failed.contains_key(path)
    }

    /// Whether `stamp` is the one last used or last failed for `path`.
    fn unchanged(&self, path: &Path, stamp: &Stamp) -> bool {
        self.files.get(path).is_some_and(|f| f.stamp == *stamp)
            || self.failed.get(path) == Some(stamp)
    }

    /// Drops a file that is gone; its objects become orphans.
    fn forget(&mut self, path: &Path, orphans: &mut Vec<Orphan>) {
        if let Some((p, f)) = self.files.remove_entry(path) {
            orphans.extend(f.objects.into_iter().map(|(k, o, _)| (k, o, p.clone())));
        }
    }

    /// Reads and parses one file and sends what changed in it. `false`
    /// when the receiver has gone away.
    async fn load(
        &mut self,
        path: &Path,
        report: &mut RefreshReport,
        orphans: &mut Vec<Orphan>,
        tx: &mpsc::Sender<Change>,
    ) -> bool {
        let (stamp, docs) = match read_file(path) {
            // Gone between the listing (or the event) and now.
            Ok(None) => {
                self.forget(path, orphans);
                self.failed.remove(path);
                return true;
            }
            Ok(Some((stamp, _))) if self.unchanged(path, &stamp) => return true,
            Ok(Some((stamp, text))) => {
                report.parsed += 1;
                (stamp, parse_file(path, &text))
            }
            Err(source) => {
                report.parsed += 1;
                let stamp = stat_stamp(path);
                let e = ManifestError::Read {
                    path: path.to_path_buf(),
                    source,
                };
                match stamp {
                    Some(stamp) => (stamp, Err(e)),
                    None => {
                        report.errors.push(e.to_string());
                        return true;
                    }
                }
            }
        };
        let docs = match docs {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot use manifest file; keeping what it gave before");
                report.errors.push(e.to_string());
                self.failed.insert(path.to_path_buf(), stamp);
                return true;
            }
        };
        self.failed.remove(path);
        let out = self.apply_docs(path, stamp, docs, orphans);
        for c in out {
            report.sent += 1;
            if tx.send(c).await.is_err() {
                report.closed = true;
                return false;
            }
        }
        true
    }

    /// Takes a file's new documents into the index; returns the changes.
    fn apply_docs(
        &mut self,
        path: &Path,
        stamp: Stamp,
        docs: Vec<Doc>,
        orphans: &mut Vec<Orphan>,
    ) -> Vec<Change> {
        let (file, before) = match self.files.remove_entry(path) {
            Some((p, f)) => (p, Some(f.objects)),
            None => (Arc::from(path), None),
        };
        let mut objects = Vec::new();
        let mut out = Vec::new();
        for doc in docs {
            let (obj, hash) = match doc {
                Doc::Object(obj, hash) => (obj, hash),
                Doc::Skipped(kind) => {
                    tracing::warn!(file = %file.display(), %kind, "manifest of a kind the agent does not use; skipped");
                    continue;
                }
            };
            let selected = match &obj {
                Object::Service(s) => selected(&s.metadata),
                Object::EndpointSlice(s) => selected(&s.metadata),
                Object::Node(_) => true,
            };
            if !selected {
                continue;
            }
            let (kind, key) = obj.id();
            objects.push((kind, key.clone(), hash));
            let id = (kind, key);
            match self.sent.get(&id) {
                Some((owner, h)) if *owner == file && *h == hash => continue,
                Some((owner, _))
                    if *owner != file
                        && owner < &file
                        && self
                            .files
                            .get(owner)
                            .is_some_and(|f| f.defines(id.0, &id.1)) =>
                {
                    tracing::warn!(object = %id.1, %kind, file = %file.display(), first = %owner.display(), "object defined in two manifest files; the first file's is used");
                    continue;
                }
                _ => {
                    self.sent.insert(id, (file.clone(), hash));
                    out.push(Change::Applied(obj));
                }
            }
        }
        for (kind, key, _) in before.into_iter().flatten() {
            if !objects.iter().any(|(k, o, _)| *k == kind && *o == key) {
                orphans.push((kind, key, file.clone()));
            }
        }
        self.files.insert(file, IndexedFile { stamp, objects });
        out
    }

    /// Orphans still owned by the file that dropped them: another file may
    /// define them too (first in name order wins), else they go. Then,
    /// when `first`, `Listed` for both kinds.
    async fn settle(
        &mut self,
        mut orphans: Vec<Orphan>,
        first: bool,
        report: &mut RefreshReport,
        tx: &mpsc::Sender<Change>,
    ) {
        orphans.retain(|(k, o, f)| {
            self.sent
                .get(&(*k, o.clone()))
                .is_some_and(|(owner, _)| owner == f)
        });
        orphans.sort();
        orphans.dedup();
        let mut out = Vec::new();
        let mut reparse: BTreeMap<Arc<Path>, Vec<(Kind, ObjectKey)>> = BTreeMap::new();
        for (kind, key, _) in orphans {
            let other = self
                .files
                .iter()
                .filter(|(_, f)| f.defines(kind, &key))
                .map(|(p, _)| p)
                .min()
                .cloned();
            match other {
                Some(p) => reparse.entry(p).or_default().push((kind, key)),
                None => {
                    self.sent.remove(&(kind, key.clone()));
                    out.push(Change::Deleted(kind, key));
                }
            }
        }
        for (path, wanted) in reparse {
            let docs = match read_file(&path) {
                Ok(Some((_, text))) => parse_file(&path, &text).unwrap_or_default(),
                _ => Vec::new(),
            };
            for (kind, key) in wanted {
                let found = docs.iter().find_map(|d| match d {
                    Doc::Object(o, h) if o.id() == (kind, key.clone()) => Some((o, *h)),
                    _ => None,
                });
                match found {
                    Some((o, h)) => {
                        self.sent.insert((kind, key), (path.clone(), h));
                        out.push(Change::Applied(o.clone()));
                    }
                    // Changed since it was listed: the next refresh parses it.
                    None => {
                        self.sent.remove(&(kind, key.clone()));
                        out.push(Change::Deleted(kind, key));
                    }
                }
            }
        }
        if first {
            out.push(Change::Listed(Kind::Service));
            out.push(Change::Listed(Kind::EndpointSlice));
        }
        for c in out {
            report.sent += 1;
            if tx.send(c).await.is_err() {
                report.closed = true;
                break;
            }
        }
    }
}
