//! Sources of Services, EndpointSlices and our Node: watches on the API
//! server, or a directory of manifests. Both feed the same stream of
//! [`Change`]s to the sync loop.
//!
//! Rules shared by both: kube-proxy's label selector
//! ([`LABEL_SELECTOR`]) on Services and EndpointSlices; a kind is
//! [`Change::Listed`] once its first complete list has been delivered; after
//! a relist, objects that are gone are reported deleted. Errors never delete
//! anything: while the API server is unreachable the node keeps what it has
//! (fail static) and the watches retry with backoff.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::Metadata;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

/// kube-proxy's selector for Services and EndpointSlices: skip objects
/// handled by another service proxy and headless services' slices.
pub const LABEL_SELECTOR: &str =
    "!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless";
/// Label naming the service proxy that handles a Service.
pub const LABEL_SERVICE_PROXY_NAME: &str = "service.kubernetes.io/service-proxy-name";
/// Label the endpoint controllers put on headless services' endpoints.
pub const LABEL_HEADLESS: &str = "service.kubernetes.io/headless";

/// The kinds we follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// core/v1 Service.
    Service,
    /// discovery.k8s.io/v1 EndpointSlice.
    EndpointSlice,
    /// Our own core/v1 Node.
    Node,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Service => "Service",
            Self::EndpointSlice => "EndpointSlice",
            Self::Node => "Node",
        })
    }
}

/// `namespace/name` of an object (namespace empty for Nodes).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    fn of(meta: &ObjectMeta) -> Self {
        Self {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// An object from a source.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A Service.
    Service(Box<Service>),
    /// An EndpointSlice.
    EndpointSlice(Box<EndpointSlice>),
    /// Our Node.
    Node(Box<Node>),
}

/// One change delivered to the sync loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Created or modified.
    Applied(Object),
    /// Deleted (or no longer selected).
    Deleted(Kind, ObjectKey),
    /// The first complete list of this kind has been delivered (sent again
    /// after each relist).
    Listed(Kind),
}

/// Whether kube-proxy's label selector keeps an object with these labels.
pub fn selected(meta: &ObjectMeta) -> bool {
    meta.labels.as_ref().is_none_or(|l| {
        !l.contains_key(LABEL_SERVICE_PROXY_NAME) && !l.contains_key(LABEL_HEADLESS)
    })
}

/// A kind's objects as last delivered, to turn lists into deltas.
trait Tracked: Clone + Metadata<Ty = ObjectMeta> + serde::Serialize {
    const SOURCE_KIND: Kind;
    fn wrap(self) -> Object;
}

impl Tracked for Service {
    const SOURCE_KIND: Kind = Kind::Service;
    fn wrap(self) -> Object {
        Object::Service(Box::new(self))
    }
}

impl Tracked for EndpointSlice {
    const SOURCE_KIND: Kind = Kind::EndpointSlice;
    fn wrap(self) -> Object {
        Object::EndpointSlice(Box::new(self))
    }
}

impl Tracked for Node {
    const SOURCE_KIND: Kind = Kind::Node;
    fn wrap(self) -> Object {
        Object::Node(Box::new(self))
    }
}

/// resourceVersion when the object has one, else its JSON (manifests).
fn fingerprint<K: Tracked>(obj: &K) -> String {
    match &obj.metadata().resource_version {
        Some(rv) if !rv.is_empty() => rv.clone(),
        _ => serde_json::to_string(obj).unwrap_or_default(),
    }
}

/// Turns list/watch events of one kind into [`Change`]s.
struct Tracker<K> {
    known: HashMap<ObjectKey, String>,
    buffer: Option<Vec<K>>,
}

impl<K: Tracked> Tracker<K> {
    fn new() -> Self {
        Self {
            known: HashMap::new(),
            buffer: None,
        }
    }

    /// A complete list: changed and new objects applied, missing ones deleted.
    /// Objects are cloned only when they changed.
    fn replace<B: std::borrow::Borrow<K>>(
        &mut self,
        objects: impl IntoIterator<Item = B>,
        out: &mut Vec<Change>,
    ) {
        let mut next = HashMap::with_capacity(self.known.len());
        for obj in objects {
            let obj = obj.borrow();
            if K::SOURCE_KIND != Kind::Node && !selected(obj.metadata()) {
                continue;
            }
            let key = ObjectKey::of(obj.metadata());
            let fp = fingerprint(obj);
            if self.known.get(&key) != Some(&fp) {
                out.push(Change::Applied(obj.clone().wrap()));
            }
            next.insert(key, fp);
        }
        let mut gone: Vec<ObjectKey> = self
            .known
            .keys()
            .filter(|k| !next.contains_key(*k))
            .cloned()
            .collect();
        gone.sort();
        for key in gone {
            out.push(Change::Deleted(K::SOURCE_KIND, key));
        }
        self.known = next;
        out.push(Change::Listed(K::SOURCE_KIND));
    }

    fn apply(&mut self, obj: K, out: &mut Vec<Change>) {
        let key = ObjectKey::of(obj.metadata());
        if K::SOURCE_KIND != Kind::Node && !selected(obj.metadata()) {
            if self.known.remove(&key).is_some() {
                out.push(Change::Deleted(K::SOURCE_KIND, key));
            }
            return;
        }
        let fp = fingerprint(&obj);
        if self.known.insert(key, fp.clone()).as_ref() != Some(&fp) {
            out.push(Change::Applied(obj.wrap()));
        }
    }

    fn delete(&mut self, obj: &K, out: &mut Vec<Change>) {
        let key = ObjectKey::of(obj.metadata());
        if self.known.remove(&key).is_some() {
            out.push(Change::Deleted(K::SOURCE_KIND, key));
        }
    }

    fn event(&mut self, ev: Event<K>, out: &mut Vec<Change>) {
        match ev {
            Event::Init => self.buffer = Some(Vec::new()),
            Event::InitApply(obj) => match &mut self.buffer {
                Some(b) => b.push(obj),
                None => self.apply(obj, out),
            },
            Event::InitDone => {
                let objects = self.buffer.take().unwrap_or_default();
                self.replace(objects, out);
            }
            Event::Apply(obj) => self.apply(obj, out),
            Event::Delete(obj) => self.delete(&obj, out),
        }
    }
}

/// Runs one watcher until `tx` closes; errors are logged and retried with
/// kube-runtime's default backoff, never turned into deletions.
async fn watch_kind<K>(api: Api<K>, cfg: watcher::Config, tx: mpsc::Sender<Change>)
where
    K: Tracked + kube::Resource + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let mut tracker = Tracker::<K>::new();
    let mut stream = Box::pin(watcher::watcher(api, cfg).default_backoff());
    while let Some(item) = stream.next().await {
        match item {
            Ok(ev) => {
                let mut out = Vec::new();
                tracker.event(ev, &mut out);
                for c in out {
                    if tx.send(c).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(kind = %K::SOURCE_KIND, error = %e, "watch failed; keeping programmed state and retrying")
            }
        }
    }
}

/// Watches Services and EndpointSlices (kube-proxy's selector) and the Node
/// `node_name`, sending changes to `tx` until it closes.
pub async fn run_cluster(client: Client, node_name: String, tx: mpsc::Sender<Change>) {
    let services = watch_kind(
        Api::<Service>::all(client.clone()),
        watcher::Config::default().labels(LABEL_SELECTOR),
        tx.clone(),
    );
    let slices = watch_kind(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(LABEL_SELECTOR),
        tx.clone(),
    );
    let node = watch_kind(
        Api::<Node>::all(client),
        watcher::Config::default().fields(&format!("metadata.name={node_name}")),
        tx,
    );
    futures::join!(services, slices, node);
}

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
        /// 0-based document index in the file.
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
/// multi-document. A missing namespace is `default`. One bad document fails
/// the whole read, so a half-written file never deletes Services.
pub fn read_manifests(dir: &Path) -> Result<Manifests, ManifestError> {
    ManifestCache::default().read(dir)
}

/// Parsed contents of one file, with what identifies its version.
#[derive(Debug, Clone)]
struct CachedFile {
    stamp: (std::time::SystemTime, u64, u64),
    docs: Manifests,
}

/// Reads a manifest directory, parsing only files whose modification time,
/// size or inode changed since the previous read.
#[derive(Debug, Default)]
pub struct ManifestCache {
    files: HashMap<PathBuf, CachedFile>,
}

impl ManifestCache {
    /// Reads `dir` (see [`read_manifests`]), reusing unchanged files.
    pub fn read(&mut self, dir: &Path) -> Result<Manifests, ManifestError> {
        self.refresh(dir)?;
        Ok(Manifests {
            services: self.services().cloned().collect(),
            slices: self.slices().cloned().collect(),
            skipped: self.skipped().cloned().collect(),
        })
    }

    fn sorted(&self) -> Vec<&CachedFile> {
        let mut v: Vec<(&PathBuf, &CachedFile)> = self.files.iter().collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v.into_iter().map(|(_, f)| f).collect()
    }

    /// The Services of the last successful read, in file order.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.sorted()
            .into_iter()
            .flat_map(|f| f.docs.services.iter())
    }

    /// The EndpointSlices of the last successful read, in file order.
    pub fn slices(&self) -> impl Iterator<Item = &EndpointSlice> {
        self.sorted().into_iter().flat_map(|f| f.docs.slices.iter())
    }

    /// The skipped documents of the last successful read.
    pub fn skipped(&self) -> impl Iterator<Item = &(PathBuf, String)> {
        self.sorted()
            .into_iter()
            .flat_map(|f| f.docs.skipped.iter())
    }

    /// Re-reads `dir`, parsing only changed files. On error the previous
    /// contents stay.
    pub fn refresh(&mut self, dir: &Path) -> Result<(), ManifestError> {
        use std::os::unix::fs::MetadataExt;
        let read_err = |path: &Path, source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        };
        let mut files: Vec<(PathBuf, std::fs::Metadata)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| read_err(dir, e))? {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let wanted = path
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x, "yaml" | "yml" | "json"));
            if !wanted {
                continue;
            }
            // Follows symlinks (ConfigMap volumes are symlinks).
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => files.push((path, m)),
                _ => {}
            }
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        // Parse every changed file first: an error leaves the cache as it was.
        let mut parsed: HashMap<PathBuf, CachedFile> = HashMap::new();
        let mut keep: Vec<PathBuf> = Vec::with_capacity(files.len());
        for (path, meta) in files {
            let stamp = (
                meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                meta.len(),
                meta.ino(),
            );
            match self.files.get(&path) {
                Some(c) if c.stamp == stamp => keep.push(path),
                _ => {
                    let text = std::fs::read_to_string(&path).map_err(|e| read_err(&path, e))?;
                    let docs = parse_file(&path, &text)?;
                    parsed.insert(path, CachedFile { stamp, docs });
                }
            }
        }
        let mut next = parsed;
        for path in keep {
            if let Some(c) = self.files.remove(&path) {
                next.insert(path, c);
            }
        }
        self.files = next;
        Ok(())
    }
}

/// A stand-in resourceVersion for objects without one: a hash of their
/// contents, computed once when the file is parsed.
fn content_version<T: serde::Serialize>(obj: &T) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(obj).unwrap_or_default().hash(&mut h);
    format!("manifest-{:016x}", h.finish())
}

fn parse_file(path: &Path, text: &str) -> Result<Manifests, ManifestError> {
    let mut out = Manifests::default();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let perr = |message: String| ManifestError::Parse {
            path: path.to_path_buf(),
            index,
            message,
        };
        let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
            .map_err(|e| perr(e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        let api_version = value
            .get("apiVersion")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        match (api_version.as_str(), kind.as_str()) {
            ("v1", "Service") => {
                let mut s: Service =
                    serde_yaml::from_value(value).map_err(|e| perr(e.to_string()))?;
                default_namespace(&mut s.metadata);
                if s.metadata.resource_version.is_none() {
                    s.metadata.resource_version = Some(content_version(&s));
                }
                out.services.push(s);
            }
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                let mut s: EndpointSlice =
                    serde_yaml::from_value(value).map_err(|e| perr(e.to_string()))?;
                default_namespace(&mut s.metadata);
                if s.metadata.resource_version.is_none() {
                    s.metadata.resource_version = Some(content_version(&s));
                }
                out.slices.push(s);
            }
            ("v1", "List") => {
                return Err(perr(
                    "kind List is not supported; use multiple documents".into(),
                ))
            }
            _ => out
                .skipped
                .push((path.to_path_buf(), format!("{api_version}/{kind}"))),
        }
    }
    Ok(out)
}

fn default_namespace(meta: &mut ObjectMeta) {
    if meta.namespace.as_deref().unwrap_or("").is_empty() {
        meta.namespace = Some("default".into());
    }
}

/// Directory change notifications (inotify, read by a small thread), when
/// available.
struct DirWatch {
    rx: mpsc::Receiver<()>,
}

impl DirWatch {
    fn new(dir: &Path) -> Option<Self> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let ino = Inotify::init(InitFlags::IN_CLOEXEC).ok()?;
        ino.add_watch(
            dir,
            AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_ATTRIB,
        )
        .ok()?;
        let (tx, rx) = mpsc::channel(1);
        std::thread::Builder::new()
            .name("manifest-watch".into())
            .spawn(move || loop {
                match ino.read_events() {
                    Ok(_) => {
                        // A full channel already holds a wake-up: fine.
                        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(()) {
                            return;
                        }
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "inotify failed; polling only");
                        return;
                    }
                }
            })
            .ok()?;
        Some(Self { rx })
    }

    /// Waits for the next change notification (forever once the watcher
    /// thread has stopped).
    async fn changed(&mut self) {
        if self.rx.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }
}

/// Follows `dir`: reads it now, again whenever inotify reports a change in
/// it, and at least every `interval` (changes that inotify does not see,
/// e.g. files replaced behind a symlink), sending the differences to `tx`
/// until it closes. Only changed files are parsed again. A read that fails
/// changes nothing.
pub async fn run_manifests(dir: PathBuf, interval: Duration, tx: mpsc::Sender<Change>) {
    let mut services = Tracker::<Service>::new();
    let mut slices = Tracker::<EndpointSlice>::new();
    let mut cache = ManifestCache::default();
    let mut last_error: Option<String> = None;
    let mut warned_skips: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut listed = std::collections::BTreeSet::new();
    let mut watch = DirWatch::new(&dir);
    if watch.is_none() {
        tracing::warn!(dir = %dir.display(), "no inotify on the manifest directory; polling only");
    }
    loop {
        match cache.refresh(&dir) {
            Ok(()) => {
                last_error = None;
                for (path, kind) in cache.skipped() {
                    if warned_skips.get(path) != Some(kind) {
                        tracing::warn!(file = %path.display(), %kind, "manifest of a kind the agent does not use; skipped");
                        warned_skips.insert(path.clone(), kind.clone());
                    }
                }
                let mut out = Vec::new();
                services.replace(cache.services(), &mut out);
                slices.replace(cache.slices(), &mut out);
                for c in out {
                    // Every read is a complete list; say so only once.
                    if let Change::Listed(kind) = c {
                        if !listed.insert(kind) {
                            continue;
                        }
                    }
                    if tx.send(c).await.is_err() {
                        return;
                    }
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
        match &mut watch {
            Some(w) => {
                tokio::select! {
                    _ = w.changed() => {
                        // Let a burst of writes settle into one read.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    _ = tokio::time::sleep(interval) => {}
                }
            }
            None => tokio::time::sleep(interval).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, rv: Option<&str>, labels: &[(&str, &str)]) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                resource_version: rv.map(Into::into),
                labels: (!labels.is_empty()).then(|| {
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn key(ns: &str, name: &str) -> ObjectKey {
        ObjectKey {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn relist_turns_into_deltas() {
        let mut t = Tracker::<Service>::new();
        let mut out = Vec::new();
        t.event(Event::Init, &mut out);
        t.event(Event::InitApply(svc("a", "x", Some("1"), &[])), &mut out);
        t.event(Event::InitApply(svc("a", "y", Some("2"), &[])), &mut out);
        assert!(out.is_empty(), "nothing before the list is complete");
        t.event(Event::InitDone, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2], Change::Listed(Kind::Service));

        // Relist after 410 Gone: x unchanged, y changed, z new, and one gone.
        out.clear();
        t.event(Event::Apply(svc("a", "w", Some("3"), &[])), &mut out);
        out.clear();
        t.event(Event::Init, &mut out);
        t.event(Event::InitApply(svc("a", "x", Some("1"), &[])), &mut out);
        t.event(Event::InitApply(svc("a", "y", Some("5"), &[])), &mut out);
        t.event(Event::InitApply(svc("a", "z", Some("6"), &[])), &mut out);
        t.event(Event::InitDone, &mut out);
        assert_eq!(
            out,
            vec![
                Change::Applied(Object::Service(Box::new(svc("a", "y", Some("5"), &[])))),
                Change::Applied(Object::Service(Box::new(svc("a", "z", Some("6"), &[])))),
                Change::Deleted(Kind::Service, key("a", "w")),
                Change::Listed(Kind::Service),
            ]
        );
    }

    #[test]
    fn selector_and_duplicates() {
        let mut t = Tracker::<Service>::new();
        let mut out = Vec::new();
        t.event(Event::Apply(svc("a", "x", Some("1"), &[])), &mut out);
        t.event(Event::Apply(svc("a", "x", Some("1"), &[])), &mut out);
        assert_eq!(out.len(), 1, "same resourceVersion twice is one change");
        // Gaining the service-proxy-name label means: not ours any more.
        t.event(
            Event::Apply(svc(
                "a",
                "x",
                Some("2"),
                &[(LABEL_SERVICE_PROXY_NAME, "other")],
            )),
            &mut out,
        );
        assert_eq!(out[1], Change::Deleted(Kind::Service, key("a", "x")));
        t.event(
            Event::Apply(svc("a", "h", Some("3"), &[(LABEL_HEADLESS, "")])),
            &mut out,
        );
        assert_eq!(out.len(), 2, "headless-labelled objects are skipped");
        t.event(Event::Delete(svc("a", "nope", None, &[])), &mut out);
        assert_eq!(out.len(), 2, "deleting an unknown object is silent");
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("ipvs-proxy-manifests-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  clusterIP: 10.96.0.10
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- port: 8080
endpoints:
- addresses: ["10.244.1.2"]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: other
"#;

    #[test]
    fn unchanged_files_are_not_parsed_again() {
        let d = temp_dir("cache");
        std::fs::write(d.join("a.yaml"), WEB).unwrap();
        std::fs::write(d.join("b.yaml"), WEB.replace("name: web", "name: api")).unwrap();
        let mut cache = ManifestCache::default();
        let first = cache.read(&d).unwrap();
        assert_eq!(first.services.len(), 2);
        // Make a.yaml unparsable without changing its size or mtime: a
        // re-parse would fail, the cache must not re-parse it.
        let meta = std::fs::metadata(d.join("a.yaml")).unwrap();
        let broken = "x".repeat(meta.len() as usize);
        std::fs::write(d.join("a.yaml"), &broken).unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(d.join("a.yaml"))
            .unwrap();
        f.set_modified(meta.modified().unwrap()).unwrap();
        drop(f);
        let again = cache.read(&d).unwrap();
        assert_eq!(again, first);
        // A real change (new mtime) is parsed.
        std::fs::write(d.join("b.yaml"), WEB.replace("name: web", "name: api2")).unwrap();
        let third = cache.read(&d).unwrap();
        assert!(third
            .services
            .iter()
            .any(|s| s.metadata.name.as_deref() == Some("api2")));
        // A failed read leaves the cache intact.
        std::fs::write(d.join("c.yaml"), "apiVersion: v1\nkind: Service\nspec: 3\n").unwrap();
        assert!(cache.read(&d).is_err());
        std::fs::remove_file(d.join("c.yaml")).unwrap();
        assert_eq!(cache.read(&d).unwrap(), third);
    }

    #[test]
    fn reads_multi_document_manifests() {
        let d = temp_dir("read");
        std::fs::write(d.join("web.yaml"), WEB).unwrap();
        std::fs::write(d.join("notes.txt"), "not yaml: [").unwrap();
        let m = read_manifests(&d).unwrap();
        assert_eq!(m.services.len(), 1);
        assert_eq!(m.services[0].metadata.namespace.as_deref(), Some("default"));
        assert_eq!(m.slices.len(), 1);
        assert_eq!(m.skipped.len(), 1);
        std::fs::write(
            d.join("bad.yaml"),
            "apiVersion: v1\nkind: Service\nspec: 3\n",
        )
        .unwrap();
        let err = read_manifests(&d).unwrap_err();
        assert!(err.to_string().contains("bad.yaml: document 0"), "{err}");
    }

    async fn next(rx: &mut mpsc::Receiver<Change>) -> Change {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("change in time")
            .expect("channel open")
    }

    /// The poll interval is a minute: every change below is seen through
    /// inotify.
    #[tokio::test]
    async fn follows_a_manifest_directory() {
        let d = temp_dir("follow");
        std::fs::write(d.join("web.yaml"), WEB).unwrap();
        let (tx, mut rx) = mpsc::channel(64);
        let task = tokio::spawn(run_manifests(d.clone(), Duration::from_secs(60), tx));
        let mut first = Vec::new();
        for _ in 0..4 {
            first.push(next(&mut rx).await);
        }
        assert!(
            matches!(&first[0], Change::Applied(Object::Service(s)) if s.metadata.name.as_deref() == Some("web"))
        );
        assert_eq!(first[1], Change::Listed(Kind::Service));
        assert!(matches!(
            &first[2],
            Change::Applied(Object::EndpointSlice(_))
        ));
        assert_eq!(first[3], Change::Listed(Kind::EndpointSlice));

        // Replace the endpoint address: exactly the slice changes.
        std::fs::write(d.join("web.yaml"), WEB.replace("10.244.1.2", "10.244.1.3")).unwrap();
        let changed = loop {
            match next(&mut rx).await {
                Change::Listed(_) => continue,
                other => break other,
            }
        };
        match changed {
            Change::Applied(Object::EndpointSlice(s)) => {
                assert_eq!(s.endpoints[0].addresses, vec!["10.244.1.3".to_string()])
            }
            other => panic!("unexpected {other:?}"),
        }

        // A broken file changes nothing; removing the file deletes both.
        std::fs::write(d.join("web.yaml"), "kind: Service\napiVersion: v1\nspec: [").unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(c) = rx.try_recv() {
            panic!("a broken file must change nothing, got {c:?}");
        }
        std::fs::remove_file(d.join("web.yaml")).unwrap();
        let mut deleted = Vec::new();
        while deleted.len() < 2 {
            if let Change::Deleted(kind, key) = next(&mut rx).await {
                deleted.push((kind, key));
            }
        }
        assert_eq!(
            deleted,
            vec![
                (Kind::Service, key("default", "web")),
                (Kind::EndpointSlice, key("default", "web-1")),
            ]
        );
        task.abort();
    }
}
