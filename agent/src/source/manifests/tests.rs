//! Tests of the manifest source: parse (against a value-tree oracle),
//! index, inotify and the followed directory.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::sync::mpsc;

use super::index::STAT_CHUNK;
use super::parse::{default_namespace, parse_file, Doc};
use super::watch::{run_manifests, Pending, MAX_PENDING_NAMES};
use super::*;
use crate::source::{Change, Kind, Object, ObjectKey};

/// The parse before the one-pass one (through a YAML value tree): the
/// reference the one-pass parse must agree with.
fn parse_file_via_value(path: &Path, text: &str) -> Result<Vec<Doc>, ManifestError> {
    use std::hash::{Hash, Hasher};
    let mut out = Vec::new();
    let mut bytes = text.as_bytes();
    let docs =
        serde_saphyr::read_with_options::<_, serde_json::Value>(&mut bytes, crate::yaml::options());
    for (index, value) in docs.enumerate() {
        let perr = |message: String| ManifestError::Parse {
            path: path.to_path_buf(),
            index,
            message,
        };
        let value = value.map_err(|e| perr(e.to_string()))?;
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
        value.to_string().hash(&mut h);
        let hash = h.finish();
        let version = || Some(format!("manifest-{hash:016x}"));
        let obj = match (api_version.as_str(), kind.as_str()) {
            ("v1", "Service") => {
                let mut s: Service =
                    serde_json::from_value(value).map_err(|e| perr(e.to_string()))?;
                default_namespace(&mut s.metadata);
                if s.metadata.resource_version.is_none() {
                    s.metadata.resource_version = version();
                }
                Object::Service(Box::new(s))
            }
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                let mut s: EndpointSlice =
                    serde_json::from_value(value).map_err(|e| perr(e.to_string()))?;
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

fn key(ns: &str, name: &str) -> ObjectKey {
    ObjectKey {
        namespace: ns.into(),
        name: name.into(),
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ipvs-proxy-manifests-{tag}-{}", std::process::id()));
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
