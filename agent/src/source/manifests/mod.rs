//! The manifest source: a directory of YAML/JSON files, read once
//! ([`read_manifests`]) or followed ([`run_manifests`]): files are parsed
//! in one pass ([`parse`]), indexed by what they define ([`index`]) and
//! watched with inotify and a poll ([`watch`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{Kind, Object, ObjectKey};

mod index;
mod parse;
#[cfg(test)]
mod tests;
mod watch;

pub use index::{ManifestIndex, RefreshReport};
use parse::{parse_file, Doc};
pub use watch::run_manifests;

/// A manifest that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The directory or a file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A document is not valid YAML or not a valid object of its kind.
    #[error("{path}: document {index}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 0-based index of the document among the file's non-empty
        /// ones (the message has the line and column).
        index: usize,
        /// What is wrong.
        message: String,
    },
}

/// Services and EndpointSlices read from a directory.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Manifests {
    /// Services.
    pub services: Vec<Service>,
    /// EndpointSlices.
    pub slices: Vec<EndpointSlice>,
    /// Documents of other kinds, skipped (file, kind).
    pub skipped: Vec<(PathBuf, String)>,
}

/// Reads every `*.yaml`, `*.yml` and `*.json` file of `dir` (not recursive),
/// multi-document, in file name order. A missing namespace is `default`;
/// an object defined twice is taken from its first file, as the agent does.
/// One bad document fails the whole read. For one-shot commands (`plan`,
/// `show`); the agent follows a directory with [`ManifestIndex`].
pub fn read_manifests(dir: &Path) -> Result<Manifests, ManifestError> {
    let mut out = Manifests::default();
    let mut seen = HashSet::new();
    for path in manifest_names(dir)? {
        let text = match read_file(&path) {
            Ok(Some((_, text))) => text,
            // Gone since the listing, or not a file.
            Ok(None) => continue,
            Err(source) => return Err(ManifestError::Read { path, source }),
        };
        for doc in parse_file(&path, &text)? {
            if let Doc::Object(o, _) = &doc {
                if !seen.insert(o.id()) {
                    continue;
                }
            }
            match doc {
                Doc::Object(Object::Service(s), _) => out.services.push(*s),
                Doc::Object(Object::EndpointSlice(s), _) => out.slices.push(*s),
                Doc::Object(Object::Node(_), _) => {}
                Doc::Skipped(kind) => out.skipped.push((path.clone(), kind)),
            }
        }
    }
    Ok(out)
}

/// What identifies a file's version: modification time, size, inode.
type Stamp = (std::time::SystemTime, u64, u64);

fn stamp_of(m: &std::fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    (
        m.modified().unwrap_or(std::time::UNIX_EPOCH),
        m.len(),
        m.ino(),
    )
}

/// Whether a directory entry's name is one of a manifest file.
fn is_manifest_name(name: &std::ffi::OsStr) -> bool {
    Path::new(name)
        .extension()
        .and_then(|x| x.to_str())
        .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"))
}

/// The paths of `dir` with a manifest file name, sorted. No `stat` per
/// entry (one costs tens of microseconds in a VM, and a directory can hold
/// thousands of files): only directories known as such from the listing
/// itself are left out; whether the others are files (they may be symlinks,
/// as in ConfigMap volumes) is found when they are read.
fn manifest_names(dir: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ManifestError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let Ok(entry) = entry else { continue };
        if !is_manifest_name(&entry.file_name()) || entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        names.push(entry.path());
    }
    names.sort();
    Ok(names)
}

/// The stamp of `path` when it is (a symlink to) a file; `None` when it is
/// gone, not a file, or cannot be examined.
fn stat_stamp(path: &Path) -> Option<Stamp> {
    std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| stamp_of(&m))
}

/// Files larger than this are still read whole; the buffer just starts
/// smaller.
const READ_HINT_MAX: usize = 16 << 20;

/// Reads a file with its stamp, taken from the open file before reading:
/// `open`, `fstat`, `read`, `close` for a file that does not change
/// meanwhile (the read that would confirm the end is skipped when the
/// file's size at the `fstat` has been read: a later write changes the
/// stamp, and the next look reads the file again). `None` when the path
/// is gone or not a file.
fn read_file(path: &Path) -> std::io::Result<Option<(Stamp, String)>> {
    use std::io::{ErrorKind, Read};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    let size = usize::try_from(meta.len()).unwrap_or(usize::MAX);
    let mut buf = vec![0u8; size.min(READ_HINT_MAX) + 1];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let want = buf.len() - len;
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len == size && n < want {
                    break;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(len);
    let text =
        String::from_utf8(buf).map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
    Ok(Some((stamp_of(&meta), text)))
}

impl Object {
    /// The object's kind and key.
    fn id(&self) -> (Kind, ObjectKey) {
        match self {
            Object::Service(s) => (Kind::Service, ObjectKey::of(&s.metadata)),
            Object::EndpointSlice(s) => (Kind::EndpointSlice, ObjectKey::of(&s.metadata)),
            Object::Node(n) => (Kind::Node, ObjectKey::of(&n.metadata)),
        }
    }
}
