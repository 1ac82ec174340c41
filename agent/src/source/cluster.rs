//! The cluster source: watches on the API server (kube-runtime's watcher),
//! lists turned into deltas.

use std::collections::{BTreeMap, HashMap, HashSet};

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

use super::{selected, Change, Kind, Object, ObjectKey, LABEL_SELECTOR};

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

#[cfg(test)]
mod tests;
