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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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

/// Annotation `kubectl apply` keeps a whole copy of the object in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

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

/// Drops what no consumer reads and what can be the bulk of an object from
/// the API server: `managedFields` and kubectl's last-applied copy. Objects
/// waiting in the channel to the sync loop are then about the size of
/// their spec.
fn slim(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            meta.annotations = None;
        }
    }
}

/// A Service or EndpointSlice decoded from the API server without what
/// [`slim`] drops: `managedFields` and the last-applied annotation are
/// skipped while the JSON is read, never built (a list page holds up to
/// 500 objects, and those two are most of an applied object's JSON). Only
/// the fields the types have are read; `apiVersion`, `kind` and unknown
/// fields are ignored.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(transparent)]
struct Lean<K>(K);

impl<K: k8s_openapi::Resource> k8s_openapi::Resource for Lean<K> {
    const API_VERSION: &'static str = K::API_VERSION;
    const GROUP: &'static str = K::GROUP;
    const KIND: &'static str = K::KIND;
    const VERSION: &'static str = K::VERSION;
    const URL_PATH_SEGMENT: &'static str = K::URL_PATH_SEGMENT;
    type Scope = K::Scope;
}

impl<K: Metadata<Ty = ObjectMeta>> Metadata for Lean<K> {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        self.0.metadata()
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        self.0.metadata_mut()
    }
}

impl<K: Tracked> Tracked for Lean<K> {
    const SOURCE_KIND: Kind = K::SOURCE_KIND;
    fn wrap(self) -> Object {
        self.0.wrap()
    }
}

/// `metadata` without `managedFields` and the last-applied annotation: the
/// other fields are read as JSON values (a few short strings and maps) and
/// then as [`ObjectMeta`].
struct LeanMeta(ObjectMeta);

impl<'de> serde::Deserialize<'de> for LeanMeta {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LeanMeta;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("ObjectMeta")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<LeanMeta, A::Error> {
                use serde::de::{Error, IgnoredAny};
                let mut rest = serde_json::Map::new();
                let mut annotations: Option<LeanAnnotations> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "managedFields" => {
                            map.next_value::<IgnoredAny>()?;
                        }
                        "annotations" => annotations = map.next_value()?,
                        _ => {
                            let v: serde_json::Value = map.next_value()?;
                            rest.insert(key, v);
                        }
                    }
                }
                let mut meta: ObjectMeta =
                    serde::Deserialize::deserialize(serde_json::Value::Object(rest))
                        .map_err(A::Error::custom)?;
                meta.annotations = annotations.map(|a| a.0).filter(|a| !a.is_empty());
                Ok(LeanMeta(meta))
            }
        }
        d.deserialize_map(V)
    }
}

/// Annotations without kubectl's last-applied copy (skipped unread).
struct LeanAnnotations(BTreeMap<String, String>);

impl<'de> serde::Deserialize<'de> for LeanAnnotations {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LeanAnnotations;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<LeanAnnotations, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if key == LAST_APPLIED {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    } else {
                        out.insert(key, map.next_value()?);
                    }
                }
                Ok(LeanAnnotations(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A Service's fields as the API server sends them.
#[derive(serde::Deserialize)]
struct ServiceWire {
    metadata: Option<LeanMeta>,
    spec: Option<k8s_openapi::api::core::v1::ServiceSpec>,
    status: Option<k8s_openapi::api::core::v1::ServiceStatus>,
}

impl<'de> serde::Deserialize<'de> for Lean<Service> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = <ServiceWire as serde::Deserialize>::deserialize(d)?;
        Ok(Lean(Service {
            metadata: w.metadata.map(|m| m.0).unwrap_or_default(),
            spec: w.spec,
            status: w.status,
        }))
    }
}

/// An EndpointSlice's fields as the API server sends them (a missing or
/// null required field is its default, as k8s-openapi reads it).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SliceWire {
    metadata: Option<LeanMeta>,
    address_type: Option<String>,
    endpoints: Option<Vec<k8s_openapi::api::discovery::v1::Endpoint>>,
    ports: Option<Vec<k8s_openapi::api::discovery::v1::EndpointPort>>,
}

impl<'de> serde::Deserialize<'de> for Lean<EndpointSlice> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = <SliceWire as serde::Deserialize>::deserialize(d)?;
        Ok(Lean(EndpointSlice {
            metadata: w.metadata.map(|m| m.0).unwrap_or_default(),
            address_type: w.address_type.unwrap_or_default(),
            endpoints: w.endpoints.unwrap_or_default(),
            ports: w.ports,
        }))
    }
}

/// resourceVersion when the object has one, else its JSON.
fn fingerprint<K: Tracked>(obj: &K) -> String {
    match &obj.metadata().resource_version {
        Some(rv) if !rv.is_empty() => rv.clone(),
        _ => serde_json::to_string(obj).unwrap_or_default(),
    }
}

/// Turns list/watch events of one kind into [`Change`]s. It keeps a
/// resourceVersion per object, never the objects: a list is passed on
/// object by object as it arrives (only changed ones), and the keys seen
/// are remembered to report, once the list is complete, what is gone.
struct Tracker<K> {
    known: HashMap<ObjectKey, String>,
    /// Keys seen so far in a list in progress.
    listing: Option<HashSet<ObjectKey>>,
    _kind: std::marker::PhantomData<K>,
}

impl<K: Tracked> Tracker<K> {
    fn new() -> Self {
        Self {
            known: HashMap::new(),
            listing: None,
            _kind: std::marker::PhantomData,
        }
    }

    /// An object from a list or a watch event: applied when new or changed;
    /// one that left the selector is deleted.
    fn apply(&mut self, mut obj: K, out: &mut Vec<Change>) {
        let key = ObjectKey::of(obj.metadata());
        if K::SOURCE_KIND != Kind::Node && !selected(obj.metadata()) {
            if self.known.remove(&key).is_some() {
                out.push(Change::Deleted(K::SOURCE_KIND, key));
            }
            return;
        }
        if let Some(seen) = self.listing.as_mut() {
            seen.insert(key.clone());
        }
        let fp = fingerprint(&obj);
        if self.known.get(&key) != Some(&fp) {
            self.known.insert(key, fp);
            slim(obj.metadata_mut());
            out.push(Change::Applied(obj.wrap()));
        }
    }

    fn delete(&mut self, obj: &K, out: &mut Vec<Change>) {
        let key = ObjectKey::of(obj.metadata());
        if self.known.remove(&key).is_some() {
            out.push(Change::Deleted(K::SOURCE_KIND, key));
        }
    }

    /// The list is complete: what it did not contain is gone.
    fn list_done(&mut self, out: &mut Vec<Change>) {
        let seen = self.listing.take().unwrap_or_default();
        let mut gone: Vec<ObjectKey> = self
            .known
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        gone.sort();
        for key in gone {
            self.known.remove(&key);
            out.push(Change::Deleted(K::SOURCE_KIND, key));
        }
        out.push(Change::Listed(K::SOURCE_KIND));
    }

    fn event(&mut self, ev: Event<K>, out: &mut Vec<Change>) {
        match ev {
            Event::Init => self.listing = Some(HashSet::new()),
            Event::InitApply(obj) | Event::Apply(obj) => self.apply(obj, out),
            Event::InitDone => self.list_done(out),
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
        Api::<Lean<Service>>::all(client.clone()),
        watcher::Config::default().labels(LABEL_SELECTOR),
        tx.clone(),
    );
    let slices = watch_kind(
        Api::<Lean<EndpointSlice>>::all(client.clone()),
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

/// One document of a manifest file.
#[derive(Debug)]
enum Doc {
    /// A Service or EndpointSlice and a hash of its document.
    Object(Object, u64),
    /// A document of another kind (`apiVersion/kind`).
    Skipped(String),
}
/// Parses a multi-document file, each document in one pass straight into
/// its type (no intermediate tree: reading the manifests at start-up is
/// mostly YAML parsing). Objects without a resourceVersion get
/// `manifest-<hash of the object>`, which stands in for one.
fn parse_file(path: &Path, text: &str) -> Result<Vec<Doc>, ManifestError> {
    let mut out = Vec::new();
    for (index, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let perr = |message: String| ManifestError::Parse {
            path: path.to_path_buf(),
            index,
            message,
        };
        let parsed = serde::Deserializer::deserialize_any(doc, DocVisitor)
            .map_err(|e| perr(e.to_string()))?;
        let mut obj = match parsed {
            Parsed::Empty => continue,
            Parsed::List => {
                return Err(perr(
                    "kind List is not supported; use multiple documents".into(),
                ))
            }
            Parsed::Other(api_version, kind) => {
                out.push(Doc::Skipped(format!("{api_version}/{kind}")));
                continue;
            }
            Parsed::Service(mut s) => {
                compact_service(&mut s);
                Object::Service(s)
            }
            Parsed::EndpointSlice(mut s) => {
                compact_slice(&mut s);
                Object::EndpointSlice(s)
            }
        };
        let hash = object_hash(&obj);
        let meta = match &mut obj {
            Object::Service(s) => &mut s.metadata,
            Object::EndpointSlice(s) => &mut s.metadata,
            Object::Node(n) => &mut n.metadata,
        };
        default_namespace(meta);
        if meta.resource_version.is_none() {
            meta.resource_version = Some(format!("manifest-{hash:016x}"));
        }
        out.push(Doc::Object(obj, hash));
    }
    Ok(out)
}

/// Lists read from YAML grow by doubling (the parser gives no length):
/// trims the ones every Service has, as a value tree's exact lengths did.
fn compact_service(s: &mut Service) {
    if let Some(spec) = s.spec.as_mut() {
        if let Some(v) = spec.ports.as_mut() {
            v.shrink_to_fit();
        }
        if let Some(v) = spec.cluster_ips.as_mut() {
            v.shrink_to_fit();
        }
        if let Some(v) = spec.ip_families.as_mut() {
            v.shrink_to_fit();
        }
    }
}

/// As [`compact_service`], for an EndpointSlice's endpoints and ports.
fn compact_slice(s: &mut EndpointSlice) {
    s.endpoints.shrink_to_fit();
    for e in &mut s.endpoints {
        e.addresses.shrink_to_fit();
    }
    if let Some(v) = s.ports.as_mut() {
        v.shrink_to_fit();
    }
}

/// A hash of an object's content (its JSON), to tell versions apart.
fn object_hash(obj: &Object) -> u64 {
    use std::hash::Hasher;
    struct HashWriter(std::collections::hash_map::DefaultHasher);
    impl std::io::Write for HashWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.write(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = HashWriter(Default::default());
    // Cannot fail: the objects have only string map keys.
    let _ = match obj {
        Object::Service(s) => serde_json::to_writer(&mut w, s),
        Object::EndpointSlice(s) => serde_json::to_writer(&mut w, s),
        Object::Node(n) => serde_json::to_writer(&mut w, n),
    };
    w.0.finish()
}

/// What a manifest document holds, read in one pass.
#[derive(Debug)]
enum Parsed {
    /// An empty document.
    Empty,
    /// A `v1` `List`.
    List,
    /// Another kind (`apiVersion`, `kind`; empty when absent).
    Other(String, String),
    /// A Service.
    Service(Box<Service>),
    /// An EndpointSlice.
    EndpointSlice(Box<EndpointSlice>),
}

/// The document types we read, by `apiVersion` and `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Service,
    EndpointSlice,
    List,
    Other,
}

impl Shape {
    fn of(api_version: &str, kind: &str) -> Self {
        match (api_version, kind) {
            ("v1", "Service") => Self::Service,
            ("discovery.k8s.io/v1", "EndpointSlice") => Self::EndpointSlice,
            ("v1", "List") => Self::List,
            _ => Self::Other,
        }
    }
}

/// Top-level field names of the documents we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    ApiVersion,
    Kind,
    Metadata,
    Spec,
    Status,
    AddressType,
    Endpoints,
    Ports,
    Other,
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Key, E> {
                Ok(match s {
                    "apiVersion" => Key::ApiVersion,
                    "kind" => Key::Kind,
                    "metadata" => Key::Metadata,
                    "spec" => Key::Spec,
                    "status" => Key::Status,
                    "addressType" => Key::AddressType,
                    "endpoints" => Key::Endpoints,
                    "ports" => Key::Ports,
                    _ => Key::Other,
                })
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Key, E> {
                Ok(Key::Other)
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Key, E> {
                Ok(Key::Other)
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Key, E> {
                Ok(Key::Other)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Key, E> {
                Ok(Key::Other)
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Key, E> {
                Ok(Key::Other)
            }
        }
        d.deserialize_any(KeyVisitor)
    }
}

/// Deserializes one top-level field into the object being built, as
/// k8s-openapi does (a missing or null required field is its default;
/// unknown fields are ignored).
struct Field<'a> {
    shape: Shape,
    key: Key,
    svc: &'a mut Service,
    slice: &'a mut EndpointSlice,
}

impl<'de> serde::de::DeserializeSeed<'de> for Field<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        use serde::Deserialize;
        match (self.shape, self.key) {
            (Shape::Service, Key::Metadata) => {
                self.svc.metadata = Option::deserialize(d)?.unwrap_or_default()
            }
            (Shape::Service, Key::Spec) => self.svc.spec = Deserialize::deserialize(d)?,
            (Shape::Service, Key::Status) => self.svc.status = Deserialize::deserialize(d)?,
            (Shape::EndpointSlice, Key::Metadata) => {
                self.slice.metadata = Option::deserialize(d)?.unwrap_or_default()
            }
            (Shape::EndpointSlice, Key::AddressType) => {
                self.slice.address_type = Option::deserialize(d)?.unwrap_or_default()
            }
            (Shape::EndpointSlice, Key::Endpoints) => {
                self.slice.endpoints = Option::deserialize(d)?.unwrap_or_default()
            }
            (Shape::EndpointSlice, Key::Ports) => self.slice.ports = Deserialize::deserialize(d)?,
            _ => {
                serde::de::IgnoredAny::deserialize(d)?;
            }
        }
        Ok(())
    }
}

/// Reads a document: `apiVersion` and `kind` first (where manifests put
/// them; fields before them are kept as YAML values until they are
/// known), then each field straight into the Service's or EndpointSlice's
/// type; other kinds' fields are skipped unread.
struct DocVisitor;

impl DocVisitor {
    fn other<E>(self) -> Result<Parsed, E> {
        Ok(Parsed::Other(String::new(), String::new()))
    }
}

impl<'de> serde::de::Visitor<'de> for DocVisitor {
    type Value = Parsed;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Kubernetes object")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Parsed, E> {
        Ok(Parsed::Empty)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Parsed, E> {
        Ok(Parsed::Empty)
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Parsed, E> {
        self.other()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Parsed, E> {
        self.other()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Parsed, E> {
        self.other()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Parsed, E> {
        self.other()
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Parsed, E> {
        self.other()
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Parsed, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        self.other()
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<Parsed, A::Error> {
        use serde::de::VariantAccess;
        let (serde::de::IgnoredAny, v) = data.variant()?;
        v.newtype_variant::<serde::de::IgnoredAny>()?;
        self.other()
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
        use serde::de::{DeserializeSeed, Error};
        let mut api_version: Option<String> = None;
        let mut kind: Option<String> = None;
        let mut shape: Option<Shape> = None;
        let mut early: Vec<(Key, serde_yaml::Value)> = Vec::new();
        let mut svc = Service::default();
        let mut slice = EndpointSlice::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::ApiVersion | Key::Kind => {
                    let v: serde_yaml::Value = map.next_value()?;
                    let s = v.as_str().unwrap_or_default().to_string();
                    if key == Key::ApiVersion {
                        api_version = Some(s);
                    } else {
                        kind = Some(s);
                    }
                    if let (Some(a), Some(k)) = (&api_version, &kind) {
                        let s = Shape::of(a, k);
                        shape = Some(s);
                        for (key, v) in early.drain(..) {
                            let field = Field {
                                shape: s,
                                key,
                                svc: &mut svc,
                                slice: &mut slice,
                            };
                            field.deserialize(v).map_err(A::Error::custom)?;
                        }
                    }
                }
                _ => match shape {
                    Some(shape) => map.next_value_seed(Field {
                        shape,
                        key,
                        svc: &mut svc,
                        slice: &mut slice,
                    })?,
                    None => early.push((key, map.next_value()?)),
                },
            }
        }
        Ok(match shape {
            Some(Shape::Service) => Parsed::Service(Box::new(svc)),
            Some(Shape::EndpointSlice) => Parsed::EndpointSlice(Box::new(slice)),
            Some(Shape::List) => Parsed::List,
            Some(Shape::Other) | None => {
                Parsed::Other(api_version.unwrap_or_default(), kind.unwrap_or_default())
            }
        })
    }
}

fn default_namespace(meta: &mut ObjectMeta) {
    if meta.namespace.as_deref().unwrap_or("").is_empty() {
        meta.namespace = Some("default".into());
    }
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
    listed: bool,
}

/// How many files a full refresh `stat`s between two looks at inotify's
/// news (~64 x 45 us in the UML benchmark).
const STAT_CHUNK: usize = 64;

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
    async fn refresh_with(
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

/// Names inotify reported and not yet read; more than this and the source
/// lists the whole directory instead.
const MAX_PENDING_NAMES: usize = 4096;

/// What inotify reported since the source last looked.
#[derive(Debug, Default, PartialEq, Eq)]
struct Pending {
    /// Entries of the directory that changed.
    names: BTreeSet<OsString>,
    /// Events were lost (queue overflow) or concern more than one entry
    /// (a directory, the watch itself): list the whole directory.
    rescan: bool,
}

impl Pending {
    /// Notes one inotify event.
    fn note(&mut self, mask: nix::sys::inotify::AddWatchFlags, name: Option<OsString>) {
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
    fn needs_full(&self, dir: &Path) -> bool {
        self.rescan
            || self.names.iter().any(|n| {
                !is_manifest_name(n)
                    && std::fs::symlink_metadata(dir.join(n))
                        .is_ok_and(|m| m.file_type().is_symlink())
            })
    }
}

/// Directory change notifications (inotify, read by a small thread), when
/// available: the names of the entries that changed, so that only those
/// are read.
struct DirWatch {
    pending: Arc<std::sync::Mutex<Pending>>,
    rx: mpsc::Receiver<()>,
}

impl DirWatch {
    fn new(dir: &Path) -> Option<Self> {
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        let ino = Inotify::init(InitFlags::IN_CLOEXEC).ok()?;
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
        let pending = Arc::new(std::sync::Mutex::new(Pending::default()));
        let shared = pending.clone();
        let (tx, rx) = mpsc::channel(1);
        std::thread::Builder::new()
            .name("manifest-watch".into())
            .spawn(move || loop {
                match ino.read_events() {
                    Ok(events) => {
                        {
                            let mut p = shared.lock().unwrap_or_else(|e| e.into_inner());
                            for e in events {
                                p.note(e.mask, e.name);
                            }
                        }
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
        Some(Self { pending, rx })
    }

    /// What inotify reported, if anything, without waiting.
    fn try_take(&mut self) -> Option<Pending> {
        self.rx.try_recv().ok()?;
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        Some(std::mem::take(&mut *p))
    }

    /// Waits for the next change notification (forever once the watcher
    /// thread has stopped) and takes what it reported.
    async fn changed(&mut self) -> Pending {
        if self.rx.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *p)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The parse before the one-pass one (through a YAML value tree): the
    /// reference the one-pass parse must agree with.
    fn parse_file_via_value(path: &Path, text: &str) -> Result<Vec<Doc>, ManifestError> {
        use std::hash::{Hash, Hasher};
        let mut out = Vec::new();
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
            let field = |name: &str| {
                value
                    .get(name)
                    .and_then(|k| k.as_str())
                    .unwrap_or_default()
                    .to_string()
            };
            let (kind, api_version) = (field("kind"), field("apiVersion"));
            let mut h = std::collections::hash_map::DefaultHasher::new();
            value.hash(&mut h);
            let hash = h.finish();
            let version = || Some(format!("manifest-{hash:016x}"));
            let obj = match (api_version.as_str(), kind.as_str()) {
                ("v1", "Service") => {
                    let mut s: Service =
                        serde_yaml::from_value(value).map_err(|e| perr(e.to_string()))?;
                    default_namespace(&mut s.metadata);
                    if s.metadata.resource_version.is_none() {
                        s.metadata.resource_version = version();
                    }
                    Object::Service(Box::new(s))
                }
                ("discovery.k8s.io/v1", "EndpointSlice") => {
                    let mut s: EndpointSlice =
                        serde_yaml::from_value(value).map_err(|e| perr(e.to_string()))?;
                    default_namespace(&mut s.metadata);
                    if s.metadata.resource_version.is_none() {
                        s.metadata.resource_version = version();
                    }
                    Object::EndpointSlice(Box::new(s))
                }
                ("v1", "List") => {
                    return Err(perr(
                        "kind List is not supported; use multiple documents".into(),
                    ))
                }
                _ => {
                    out.push(Doc::Skipped(format!("{api_version}/{kind}")));
                    continue;
                }
            };
            out.push(Doc::Object(obj, hash));
        }
        Ok(out)
    }

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
        assert_eq!(out.len(), 2, "objects are passed on as the list arrives");
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
        // Only keys and versions are kept.
        assert_eq!(t.known.len(), 3);
        assert!(t.listing.is_none());
    }

    #[test]
    fn managed_fields_and_last_applied_are_dropped() {
        let mut s = svc("a", "x", Some("1"), &[]);
        s.metadata.managed_fields = Some(vec![Default::default(); 3]);
        s.metadata.annotations = Some(
            [
                (LAST_APPLIED.to_string(), "{\"big\": true}".to_string()),
                ("keep".to_string(), "me".to_string()),
            ]
            .into_iter()
            .collect(),
        );
        let mut t = Tracker::<Service>::new();
        let mut out = Vec::new();
        t.event(Event::Apply(s), &mut out);
        match &out[0] {
            Change::Applied(Object::Service(s)) => {
                assert!(s.metadata.managed_fields.is_none());
                let a = s.metadata.annotations.as_ref().expect("annotations");
                assert_eq!(a.len(), 1);
                assert_eq!(a["keep"], "me");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// The lean decoding gives what the full decoding and [`slim`] give,
    /// for objects as the API server sends them (with managedFields and
    /// kubectl's copy) and for odd ones (nulls, missing fields, no
    /// metadata).
    #[test]
    fn lean_decoding_equals_full_decoding_then_slim() {
        let svc = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web",
            "namespace": "shop", "uid": "0b5e", "resourceVersion": "42", "generation": 3,
            "creationTimestamp": "2026-12-01T10:00:00Z", "labels": {"app": "web"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"big\": 1}\n",
                "service.kubernetes.io/topology-mode": "Auto"},
            "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                "time": "2026-12-01T10:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:ports": {"k:{\"port\":80}": {".": {}}}}}}],
            "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "uid": "u"}]},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP",
                "nodePort": 30080}], "sessionAffinity": "None", "externalTrafficPolicy": "Local",
                "healthCheckNodePort": 31000, "unknownField": [1, 2]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}}"#;
        let slice = r#"{"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"name": "web-1", "namespace": "shop", "resourceVersion": "43",
            "labels": {"kubernetes.io/service-name": "web"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "managedFields": [{"manager": "m", "fieldsV1": {"f:a": {}}}]},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": true},
                "nodeName": "n1", "zone": "z", "hints": {"forZones": [{"name": "z"}]}}]}"#;
        let full = |text: &str| -> Service {
            let mut s: Service = serde_json::from_str(text).unwrap();
            slim(&mut s.metadata);
            s
        };
        let lean =
            |text: &str| -> Service { serde_json::from_str::<Lean<Service>>(text).unwrap().0 };
        assert_eq!(lean(svc), full(svc));
        let l = lean(svc);
        assert_eq!(l.metadata.annotations.as_ref().map(|a| a.len()), Some(1));
        assert!(l.metadata.managed_fields.is_none());
        assert_eq!(
            l.metadata.owner_references.as_ref().map(|o| o.len()),
            Some(1)
        );
        for odd in [
            r#"{"metadata": null, "spec": null}"#,
            r#"{}"#,
            r#"{"metadata": {"name": "a", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "x"}}}"#,
            r#"{"metadata": {"name": "a", "annotations": null, "managedFields": null}}"#,
        ] {
            assert_eq!(lean(odd), full(odd), "{odd}");
        }
        let full_slice = |text: &str| -> EndpointSlice {
            let mut s: EndpointSlice = serde_json::from_str(text).unwrap();
            slim(&mut s.metadata);
            s
        };
        let lean_slice = |text: &str| -> EndpointSlice {
            serde_json::from_str::<Lean<EndpointSlice>>(text).unwrap().0
        };
        assert_eq!(lean_slice(slice), full_slice(slice));
        assert!(lean_slice(slice).metadata.annotations.is_none());
        for odd in [
            r#"{"addressType": null, "endpoints": null, "metadata": null}"#,
            r#"{"ports": [{"port": 80}]}"#,
        ] {
            assert_eq!(lean_slice(odd), full_slice(odd), "{odd}");
        }
        // A wrong type is still an error.
        assert!(serde_json::from_str::<Lean<Service>>(r#"{"spec": 3}"#).is_err());
        assert!(serde_json::from_str::<Lean<EndpointSlice>>(r#"{"endpoints": {}}"#).is_err());
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

    /// Everything `refresh` sends, in order.
    async fn refresh(index: &mut ManifestIndex, dir: &Path) -> (RefreshReport, Vec<Change>) {
        let (tx, mut rx) = mpsc::channel(1024);
        let report = index.refresh(dir, &tx).await.expect("refresh");
        drop(tx);
        let mut out = Vec::new();
        while let Some(c) = rx.recv().await {
            out.push(c);
        }
        (report, out)
    }

    fn ids(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Applied(o) => {
                    let (k, key) = o.id();
                    format!("+{k} {key}")
                }
                Change::Deleted(k, key) => format!("-{k} {key}"),
                Change::Listed(k) => format!("listed {k}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn index_sends_only_what_changed() {
        let d = temp_dir("index");
        std::fs::write(d.join("a.yaml"), WEB).unwrap();
        std::fs::write(d.join("b.yaml"), WEB.replace("web", "api")).unwrap();
        let mut index = ManifestIndex::default();
        let (r, out) = refresh(&mut index, &d).await;
        assert_eq!(r.parsed, 2);
        assert_eq!(
            ids(&out),
            [
                "+Service default/web",
                "+EndpointSlice default/web-1",
                "+Service default/api",
                "+EndpointSlice default/api-1",
                "listed Service",
                "listed EndpointSlice",
            ]
        );
        assert_eq!(index.len(), 4);

        // Nothing changed: nothing parsed, nothing sent.
        let (r, out) = refresh(&mut index, &d).await;
        assert_eq!((r.parsed, out.len()), (0, 0));

        // Make a.yaml unparsable without changing its size or mtime: it is
        // not parsed again.
        let meta = std::fs::metadata(d.join("a.yaml")).unwrap();
        std::fs::write(d.join("a.yaml"), "x".repeat(meta.len() as usize)).unwrap();
        let f = std::fs::File::options()
            .write(true)
            .open(d.join("a.yaml"))
            .unwrap();
        f.set_modified(meta.modified().unwrap()).unwrap();
        drop(f);
        let (r, out) = refresh(&mut index, &d).await;
        assert_eq!((r.parsed, out.len()), (0, 0));

        // One endpoint replaced in b.yaml: only that slice is sent.
        std::fs::write(
            d.join("b.yaml"),
            WEB.replace("web", "api")
                .replace("10.244.1.2", "10.244.1.19"),
        )
        .unwrap();
        let (r, out) = refresh(&mut index, &d).await;
        assert_eq!(r.parsed, 1);
        assert_eq!(ids(&out), ["+EndpointSlice default/api-1"]);
        match &out[0] {
            Change::Applied(Object::EndpointSlice(s)) => {
                assert_eq!(s.endpoints[0].addresses, ["10.244.1.19"])
            }
            other => panic!("unexpected {other:?}"),
        }

        // A broken file keeps what it gave; the others still go through.
        std::fs::write(d.join("b.yaml"), "apiVersion: v1\nkind: Service\nspec: 3\n").unwrap();
        std::fs::write(d.join("c.yaml"), WEB.replace("web", "shop")).unwrap();
        let (r, out) = refresh(&mut index, &d).await;
        assert_eq!(r.errors.len(), 1, "{r:?}");
        assert!(r.errors[0].contains("b.yaml: document 0"), "{r:?}");
        assert_eq!(
            ids(&out),
            ["+Service default/shop", "+EndpointSlice default/shop-1"]
        );
        // Not parsed again while it stays the same.
        let (r, _) = refresh(&mut index, &d).await;
        assert_eq!((r.parsed, r.errors.len()), (0, 0));

        // Removing a file deletes its objects.
        std::fs::remove_file(d.join("b.yaml")).unwrap();
        let (_, out) = refresh(&mut index, &d).await;
        assert_eq!(
            ids(&out),
            ["-Service default/api", "-EndpointSlice default/api-1"]
        );
        assert_eq!(index.len(), 4);
    }

    #[tokio::test]
    async fn index_applies_kube_proxys_selector() {
        let d = temp_dir("selector");
        std::fs::write(d.join("a.yaml"), WEB).unwrap();
        let mut index = ManifestIndex::default();
        refresh(&mut index, &d).await;
        // The Service gains the service-proxy-name label: not ours any more.
        let other = WEB.replacen(
            "  name: web\n",
            "  name: web\n  labels: {service.kubernetes.io/service-proxy-name: other}\n",
            1,
        );
        std::fs::write(d.join("a.yaml"), other).unwrap();
        let (_, out) = refresh(&mut index, &d).await;
        assert_eq!(ids(&out), ["-Service default/web"]);
        assert_eq!(index.len(), 1);
    }

    #[tokio::test]
    async fn index_objects_in_two_files_come_from_the_first() {
        let d = temp_dir("dups");
        let one = WEB.replace("10.96.0.10", "10.96.0.11");
        std::fs::write(d.join("b.yaml"), WEB).unwrap();
        let mut index = ManifestIndex::default();
        refresh(&mut index, &d).await;
        // a.yaml sorts first: its Service and slice take over.
        std::fs::write(d.join("a.yaml"), &one).unwrap();
        let (_, out) = refresh(&mut index, &d).await;
        assert_eq!(
            ids(&out),
            ["+Service default/web", "+EndpointSlice default/web-1"]
        );
        match &out[0] {
            Change::Applied(Object::Service(s)) => assert_eq!(
                s.spec.as_ref().unwrap().cluster_ip.as_deref(),
                Some("10.96.0.11")
            ),
            other => panic!("unexpected {other:?}"),
        }
        // A change to the second file is not used.
        std::fs::write(d.join("b.yaml"), WEB.replace("10.244.1.2", "10.244.1.77")).unwrap();
        let (_, out) = refresh(&mut index, &d).await;
        assert!(out.is_empty(), "{out:?}");
        // The first file goes: the second file's versions come back,
        // nothing is deleted.
        std::fs::remove_file(d.join("a.yaml")).unwrap();
        let (_, out) = refresh(&mut index, &d).await;
        assert_eq!(
            ids(&out),
            ["+Service default/web", "+EndpointSlice default/web-1"]
        );
        match &out[1] {
            Change::Applied(Object::EndpointSlice(s)) => {
                assert_eq!(s.endpoints[0].addresses, ["10.244.1.77"])
            }
            other => panic!("unexpected {other:?}"),
        }
        // And when the last definition goes, they are deleted.
        std::fs::remove_file(d.join("b.yaml")).unwrap();
        let (_, out) = refresh(&mut index, &d).await;
        assert_eq!(
            ids(&out),
            ["-Service default/web", "-EndpointSlice default/web-1"]
        );
        assert!(index.is_empty());
    }

    /// Writes `text` to a hidden temporary name and renames it over
    /// `name`: an atomic replacement, as editors and the benchmark do.
    fn replace(dir: &Path, name: &str, text: &str) {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }

    async fn refresh_files(
        index: &mut ManifestIndex,
        dir: &Path,
        names: &[&str],
    ) -> (RefreshReport, Vec<Change>) {
        let names: Vec<OsString> = names.iter().map(OsString::from).collect();
        let (tx, mut rx) = mpsc::channel(1024);
        let report = index.refresh_files(dir, &names, &tx).await;
        drop(tx);
        let mut out = Vec::new();
        while let Some(c) = rx.recv().await {
            out.push(c);
        }
        (report, out)
    }

    #[tokio::test]
    async fn refresh_files_reads_only_the_named_files() {
        let d = temp_dir("named");
        for name in ["api", "shop", "web"] {
            std::fs::write(d.join(format!("{name}.yaml")), WEB.replace("web", name)).unwrap();
        }
        let mut index = ManifestIndex::default();
        let (r, _) = refresh(&mut index, &d).await;
        assert_eq!((r.checked, r.parsed), (3, 3));

        // Atomic replacement of one file: only it is looked at, only the
        // slice that changed is sent. The temporary name is not a manifest.
        replace(
            &d,
            "shop.yaml",
            &WEB.replace("web", "shop")
                .replace("10.244.1.2", "10.244.1.40"),
        );
        let (r, out) = refresh_files(&mut index, &d, &[".shop.yaml.tmp", "shop.yaml"]).await;
        assert_eq!((r.checked, r.parsed), (1, 1), "{r:?}");
        assert_eq!(ids(&out), ["+EndpointSlice default/shop-1"]);

        // Named again without a change: looked at, not parsed, nothing sent.
        let (r, out) = refresh_files(&mut index, &d, &["shop.yaml"]).await;
        assert_eq!((r.checked, r.parsed, out.len()), (1, 0, 0));

        // A file that fails to parse keeps what it gave, and is reported.
        replace(&d, "shop.yaml", "apiVersion: v1\nkind: Service\nspec: 3\n");
        let (r, out) = refresh_files(&mut index, &d, &["shop.yaml"]).await;
        assert_eq!(r.errors.len(), 1, "{r:?}");
        assert!(r.errors[0].contains("shop.yaml: document 0"), "{r:?}");
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(index.len(), 6);

        // A new file, a file deleted and a file moved to a name that is not
        // a manifest's, in one batch of events.
        std::fs::write(d.join("cart.yaml"), WEB.replace("web", "cart")).unwrap();
        std::fs::remove_file(d.join("api.yaml")).unwrap();
        std::fs::rename(d.join("web.yaml"), d.join("web.yaml.off")).unwrap();
        let (r, out) = refresh_files(
            &mut index,
            &d,
            &["web.yaml", "cart.yaml", "api.yaml", "web.yaml.off"],
        )
        .await;
        assert_eq!(r.checked, 3, "{r:?}");
        assert_eq!(
            ids(&out),
            [
                "+Service default/cart",
                "+EndpointSlice default/cart-1",
                "-Service default/api",
                "-Service default/web",
                "-EndpointSlice default/api-1",
                "-EndpointSlice default/web-1",
            ]
        );
        // The broken file is still not parsed again by a full refresh, and
        // the full refresh agrees with what the events did.
        let (r, out) = refresh(&mut index, &d).await;
        assert_eq!((r.checked, r.parsed, out.len()), (2, 0, 0), "{r:?} {out:?}");
    }

    #[tokio::test]
    async fn refresh_files_hands_objects_over_between_files() {
        let d = temp_dir("named-dups");
        std::fs::write(d.join("b.yaml"), WEB).unwrap();
        std::fs::write(d.join("a.yaml"), WEB.replace("10.96.0.10", "10.96.0.11")).unwrap();
        let mut index = ManifestIndex::default();
        refresh(&mut index, &d).await;
        // The first file goes: the second file's versions are sent, nothing
        // is deleted.
        std::fs::remove_file(d.join("a.yaml")).unwrap();
        let (_, out) = refresh_files(&mut index, &d, &["a.yaml"]).await;
        assert_eq!(
            ids(&out),
            ["+Service default/web", "+EndpointSlice default/web-1"]
        );
        match &out[0] {
            Change::Applied(Object::Service(s)) => assert_eq!(
                s.spec.as_ref().unwrap().cluster_ip.as_deref(),
                Some("10.96.0.10")
            ),
            other => panic!("unexpected {other:?}"),
        }
        // It comes back: it sorts first, so it takes over again (its slice
        // is sent too: another file's copy, even if the same).
        replace(&d, "a.yaml", &WEB.replace("10.96.0.10", "10.96.0.12"));
        let (_, out) = refresh_files(&mut index, &d, &["a.yaml"]).await;
        assert_eq!(
            ids(&out),
            ["+Service default/web", "+EndpointSlice default/web-1"]
        );
        assert_eq!(index.len(), 2);
    }

    /// A full refresh of a large directory reads the files inotify names
    /// between its stats; a file created after its listing is not taken
    /// for gone, one deleted is deleted once.
    #[tokio::test]
    async fn full_refresh_reads_named_files_between_its_stats() {
        let d = temp_dir("between");
        let n = STAT_CHUNK * 2 + 5;
        for i in 0..n {
            std::fs::write(
                d.join(format!("s{i:03}.yaml")),
                WEB.replace("web", &format!("s{i:03}")),
            )
            .unwrap();
        }
        let mut index = ManifestIndex::default();
        refresh(&mut index, &d).await;
        assert_eq!(index.len(), 2 * n);

        let (tx, mut rx) = mpsc::channel(4096);
        let mut calls = 0;
        let r = index
            .refresh_with(&d, &tx, || {
                calls += 1;
                if calls > 1 {
                    return None;
                }
                std::fs::write(d.join("new.yaml"), WEB.replace("web", "new")).unwrap();
                std::fs::remove_file(d.join(format!("s{:03}.yaml", n - 1))).unwrap();
                replace(
                    &d,
                    "s000.yaml",
                    &WEB.replace("web", "s000")
                        .replace("10.244.1.2", "10.244.1.9"),
                );
                Some(vec![
                    "new.yaml".into(),
                    format!("s{:03}.yaml", n - 1).into(),
                    "s000.yaml".into(),
                ])
            })
            .await
            .expect("refresh");
        drop(tx);
        let mut out = Vec::new();
        while let Some(c) = rx.recv().await {
            out.push(c);
        }
        assert_eq!(calls, 2, "asked every {STAT_CHUNK} stats");
        assert_eq!(
            ids(&out),
            [
                "+Service default/new".to_string(),
                "+EndpointSlice default/new-1".into(),
                "+EndpointSlice default/s000-1".into(),
                format!("-Service default/s{:03}", n - 1),
                format!("-EndpointSlice default/s{:03}-1", n - 1),
            ],
            "{r:?}"
        );
        assert_eq!(index.len(), 2 * n);
        // Nothing left for the next one.
        let (r, out) = refresh(&mut index, &d).await;
        assert_eq!((r.parsed, out.len()), (0, 0), "{out:?}");
    }

    #[test]
    fn inotify_events_name_files_or_ask_for_a_full_read() {
        use nix::sys::inotify::AddWatchFlags as F;
        let mut p = Pending::default();
        p.note(F::IN_MOVED_FROM, Some(".web.yaml.tmp".into()));
        p.note(F::IN_MOVED_TO, Some("web.yaml".into()));
        p.note(F::IN_CLOSE_WRITE, Some("web.yaml".into()));
        assert!(!p.rescan);
        assert_eq!(p.names.len(), 2);
        // Lost events: everything is read, the names are moot.
        p.note(F::IN_Q_OVERFLOW, None);
        assert_eq!(
            p,
            Pending {
                names: BTreeSet::new(),
                rescan: true
            }
        );
        p.note(F::IN_CLOSE_WRITE, Some("api.yaml".into()));
        assert!(p.names.is_empty());
        // A directory in the watched one, the watch itself.
        for mask in [F::IN_CREATE | F::IN_ISDIR, F::IN_IGNORED, F::IN_DELETE_SELF] {
            let mut p = Pending::default();
            p.note(mask, Some("x".into()));
            assert!(p.rescan, "{mask:?}");
        }
        // Too many names: a full read.
        let mut p = Pending::default();
        for i in 0..=MAX_PENDING_NAMES {
            p.note(F::IN_CLOSE_WRITE, Some(format!("s{i}.yaml").into()));
        }
        assert!(p.rescan && p.names.is_empty());

        // A symlink that is not a manifest (ConfigMap volumes' `..data`)
        // changed: a full read; a manifest or a gone temporary file: not.
        let d = temp_dir("pending");
        std::fs::write(d.join("web.yaml"), WEB).unwrap();
        std::os::unix::fs::symlink(&d, d.join("..data")).unwrap();
        let named = |names: &[&str]| Pending {
            names: names.iter().map(OsString::from).collect(),
            rescan: false,
        };
        assert!(!named(&["web.yaml", ".web.yaml.tmp"]).needs_full(&d));
        assert!(named(&["..data", "web.yaml"]).needs_full(&d));
    }

    /// The next `n` changes, as [`ids`].
    async fn changes(n: usize, rx: &mut mpsc::Receiver<Change>) -> Vec<String> {
        let mut v = Vec::new();
        while v.len() < n {
            v.push(next(rx).await);
        }
        ids(&v)
    }

    /// The poll interval is a minute: every change below is seen through
    /// inotify, file by file.
    #[tokio::test]
    async fn follows_renames_and_symlink_swaps() {
        let d = temp_dir("follow-named");
        let elsewhere = temp_dir("follow-named-data");
        std::fs::write(d.join("web.yaml"), WEB).unwrap();
        // A ConfigMap volume: shop.yaml -> ..data/shop.yaml, ..data -> v1.
        std::fs::create_dir_all(elsewhere.join("v1")).unwrap();
        std::fs::create_dir_all(elsewhere.join("v2")).unwrap();
        std::fs::write(elsewhere.join("v1/shop.yaml"), WEB.replace("web", "shop")).unwrap();
        std::fs::write(
            elsewhere.join("v2/shop.yaml"),
            WEB.replace("web", "shop")
                .replace("10.244.1.2", "10.244.1.50"),
        )
        .unwrap();
        std::os::unix::fs::symlink(elsewhere.join("v1"), d.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/shop.yaml", d.join("shop.yaml")).unwrap();

        let (tx, mut rx) = mpsc::channel(64);
        let task = tokio::spawn(run_manifests(d.clone(), Duration::from_secs(60), tx));
        let mut first = Vec::new();
        while first.len() < 6 {
            first.push(next(&mut rx).await);
        }
        assert_eq!(
            ids(&first[4..]),
            ["listed Service", "listed EndpointSlice"],
            "{first:?}"
        );

        // Atomic replacement: the slice with its new address.
        replace(&d, "web.yaml", &WEB.replace("10.244.1.2", "10.244.1.33"));
        let c = next(&mut rx).await;
        match &c {
            Change::Applied(Object::EndpointSlice(s)) => {
                assert_eq!(s.endpoints[0].addresses, ["10.244.1.33"])
            }
            other => panic!("unexpected {other:?}"),
        }

        // A new file by rename, then moved away to a name the agent does
        // not read.
        replace(&d, "api.yaml", &WEB.replace("web", "api"));
        assert_eq!(
            changes(2, &mut rx).await,
            ["+Service default/api", "+EndpointSlice default/api-1"]
        );
        std::fs::rename(d.join("api.yaml"), d.join("api.yaml.off")).unwrap();
        assert_eq!(
            changes(2, &mut rx).await,
            ["-Service default/api", "-EndpointSlice default/api-1"]
        );

        // The ConfigMap's update: ..data swapped to v2 by a rename; no
        // event names shop.yaml.
        std::os::unix::fs::symlink(elsewhere.join("v2"), d.join("..data_tmp")).unwrap();
        std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
        let c = next(&mut rx).await;
        match &c {
            Change::Applied(Object::EndpointSlice(s)) => {
                assert_eq!(s.metadata.name.as_deref(), Some("shop-1"));
                assert_eq!(s.endpoints[0].addresses, ["10.244.1.50"])
            }
            other => panic!("unexpected {other:?}"),
        }

        // Deleted: its objects go.
        std::fs::remove_file(d.join("web.yaml")).unwrap();
        assert_eq!(
            changes(2, &mut rx).await,
            ["-Service default/web", "-EndpointSlice default/web-1"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Ok(c) = rx.try_recv() {
            panic!("nothing else changed, got {c:?}");
        }
        task.abort();
    }

    #[test]
    fn one_pass_parse_agrees_with_the_value_parse() {
        let docs = [
            WEB.to_string(),
            // Fields before apiVersion and kind, unknown fields, a status.
            "metadata: {name: late, namespace: x, labels: {a: b}}\nspec:\n  clusterIP: 10.96.0.9\n  ports: [{port: 53, protocol: UDP}]\nstatus: {loadBalancer: {ingress: [{ip: 1.2.3.4}]}}\nextra: [1, 2]\nkind: Service\napiVersion: v1\n".into(),
            "endpoints: [{addresses: [10.0.0.1]}]\napiVersion: discovery.k8s.io/v1\nmetadata: {name: s}\nkind: EndpointSlice\naddressType: IPv4\n".into(),
            // JSON, and null or missing required fields.
            r#"{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": null, "addressType": null, "ports": [{"port": 80}]}"#.into(),
            r#"{"kind": "Service", "apiVersion": "v1", "metadata": {"name": "j", "resourceVersion": "7"}}"#.into(),
            // Other kinds, scalars, sequences, empty and tagged documents.
            "---\n---\nhello\n---\n[1, 2]\n---\napiVersion: apps/v1\nkind: Deployment\nspec: {replicas: 3}\n---\n!thing {a: 1}\n---\nkind: Service\n".into(),
            "apiVersion: v1\nkind: Secret\nmetadata: 42\n".into(),
            // Errors: a List, a wrong type, broken YAML.
            "apiVersion: v1\nkind: List\nitems: []\n".into(),
            "apiVersion: v1\nkind: Service\nspec: 3\n".into(),
            "spec: 3\nkind: Service\napiVersion: v1\n".into(),
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nendpoints: {a: 1}\n".into(),
            "kind: Service\napiVersion: v1\nspec: [".into(),
        ];
        let path = Path::new("x.yaml");
        let shown = |docs: Vec<Doc>| -> Vec<String> {
            docs.into_iter()
                .map(|d| match d {
                    Doc::Object(mut o, _) => {
                        match &mut o {
                            Object::Service(s) => s.metadata.resource_version = None,
                            Object::EndpointSlice(s) => s.metadata.resource_version = None,
                            Object::Node(n) => n.metadata.resource_version = None,
                        }
                        format!("{o:?}")
                    }
                    Doc::Skipped(kind) => format!("skipped {kind}"),
                })
                .collect()
        };
        for text in &docs {
            match (parse_file(path, text), parse_file_via_value(path, text)) {
                (Ok(a), Ok(b)) => {
                    assert!(!a.is_empty(), "{text}");
                    assert_eq!(shown(a), shown(b), "{text}");
                }
                (
                    Err(ManifestError::Parse { index: a, .. }),
                    Err(ManifestError::Parse { index: b, .. }),
                ) => {
                    assert_eq!(a, b, "{text}")
                }
                (a, b) => panic!("{text}: {a:?} vs {b:?}"),
            }
        }
        // The stand-in resourceVersion follows the content, not the text.
        let rv = |text: &str| match &parse_file(path, text).unwrap()[0] {
            Doc::Object(Object::Service(s), h) => (s.metadata.resource_version.clone(), *h),
            other => panic!("unexpected {other:?}"),
        };
        let block =
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec:\n  clusterIP: 10.96.0.1\n";
        let flow = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}, "spec": {"clusterIP": "10.96.0.1"}}"#;
        assert_eq!(rv(block), rv(flow));
        assert_ne!(rv(block), rv(&block.replace("10.96.0.1", "10.96.0.2")));
        assert!(rv(block).0.is_some_and(|v| v.starts_with("manifest-")));
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
        // Defined twice: the first file's copy, as the agent uses.
        std::fs::remove_file(d.join("bad.yaml")).unwrap();
        std::fs::write(d.join("a.yaml"), WEB.replace("10.96.0.10", "10.96.0.11")).unwrap();
        let m = read_manifests(&d).unwrap();
        assert_eq!(m.services.len(), 1);
        assert_eq!(
            m.services[0].spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("10.96.0.11")
        );
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
        assert!(matches!(
            &first[1],
            Change::Applied(Object::EndpointSlice(_))
        ));
        assert_eq!(first[2], Change::Listed(Kind::Service));
        assert_eq!(first[3], Change::Listed(Kind::EndpointSlice));

        // Replace the endpoint address: exactly the slice changes. (A
        // different size: a rewrite within the same clock tick keeps the
        // mtime.)
        std::fs::write(d.join("web.yaml"), WEB.replace("10.244.1.2", "10.244.1.33")).unwrap();
        let changed = loop {
            match next(&mut rx).await {
                Change::Listed(_) => continue,
                other => break other,
            }
        };
        match changed {
            Change::Applied(Object::EndpointSlice(s)) => {
                assert_eq!(s.endpoints[0].addresses, vec!["10.244.1.33".to_string()])
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
