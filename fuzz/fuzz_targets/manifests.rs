//! The manifest reader (`ipvs_proxy::source::read_manifests`, what
//! `--manifests DIR`, `plan` and `show` read): one file of any bytes,
//! multi-document YAML or JSON (a first input byte `j` names the file
//! `m.json`, any other `m.yaml`). Through the public function, so the file is written to a
//! private directory on tmpfs and read back. What it accepts is then fed to
//! proxy-core as the agent does.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use ipvs_proxy::source::read_manifests;
use ipvs_proxy_fuzz as _; // the allocation guard
use libfuzzer_sys::fuzz_target;
use proxy_core::{Config, NodeFacts, ProxyState};

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let d = base.join(format!("fuzz-manifests-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create the manifest directory");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let dir = dir();
    let (name, other) = if selector == b'j' {
        ("m.json", "m.yaml")
    } else {
        ("m.yaml", "m.json")
    };
    let _ = std::fs::remove_file(dir.join(other));
    std::fs::write(dir.join(name), body).expect("write the manifest");
    match read_manifests(dir) {
        Ok(m) => {
            for s in &m.services {
                assert!(s
                    .metadata
                    .namespace
                    .as_deref()
                    .is_some_and(|n| !n.is_empty()));
                assert!(s.metadata.resource_version.is_some());
            }
            for s in &m.slices {
                assert!(s
                    .metadata
                    .namespace
                    .as_deref()
                    .is_some_and(|n| !n.is_empty()));
                assert!(s.metadata.resource_version.is_some());
            }
            let node = NodeFacts {
                name: "node-a".into(),
                ..NodeFacts::default()
            };
            let mut state = ProxyState::new(Config::default(), node);
            state.replace_all(&m.services, &m.slices);
            let _ = state.rejections();
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
