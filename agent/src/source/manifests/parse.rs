//! One pass from a manifest file's text to its objects: each document
//! straight into its type, no intermediate tree.

use std::path::Path;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::ManifestError;
use crate::source::Object;

/// One document of a manifest file.
#[derive(Debug)]
pub(super) enum Doc {
    /// A Service or EndpointSlice and a hash of its document.
    Object(Object, u64),
    /// A document of another kind (`apiVersion/kind`).
    Skipped(String),
}
impl<'de> serde::Deserialize<'de> for Parsed {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DocVisitor)
    }
}

/// Parses a multi-document file, each document in one pass straight into
/// its type (no intermediate tree: reading the manifests at start-up is
/// mostly YAML parsing). Objects without a resourceVersion get
/// `manifest-<hash of the object>`, which stands in for one.
pub(super) fn parse_file(path: &Path, text: &str) -> Result<Vec<Doc>, ManifestError> {
    let mut out = Vec::new();
    let mut bytes = text.as_bytes();
    for (index, parsed) in
        serde_saphyr::read_with_options::<_, Parsed>(&mut bytes, crate::yaml::options()).enumerate()
    {
        let perr = |message: String| ManifestError::Parse {
            path: path.to_path_buf(),
            index,
            message,
        };
        let parsed = parsed.map_err(|e| perr(e.to_string()))?;
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
        let mut early: Vec<(Key, serde_json::Value)> = Vec::new();
        let mut svc = Service::default();
        let mut slice = EndpointSlice::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::ApiVersion | Key::Kind => {
                    let v: serde_json::Value = map.next_value()?;
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

pub(super) fn default_namespace(meta: &mut ObjectMeta) {
    if meta.namespace.as_deref().unwrap_or("").is_empty() {
        meta.namespace = Some("default".into());
    }
}
