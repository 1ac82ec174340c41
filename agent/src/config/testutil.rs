//! Helpers shared by the configuration tests.

use std::path::PathBuf;

use clap::Parser;

use super::{resolve, ConfigError, Flags, Resolved};

#[derive(Parser)]
pub(super) struct Cli {
    #[command(flatten)]
    pub(super) flags: Flags,
}

pub(super) fn flags(args: &[&str]) -> Flags {
    let mut v = vec!["ipvs-proxy"];
    v.extend_from_slice(args);
    Cli::try_parse_from(v).expect("flags parse").flags
}

pub(super) fn resolve_args(args: &[&str]) -> Result<Resolved, ConfigError> {
    resolve(&flags(args), None)
}

pub(super) fn field_of(err: ConfigError) -> String {
    match err {
        ConfigError::Invalid { field, .. } => field,
        other => panic!("expected Invalid, got {other}"),
    }
}

pub(super) fn temp_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ipvs-proxy-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write temp");
    p
}

pub(super) const FULL: &str = r#"
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: ipvs
bindAddress: 0.0.0.0
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 0.0.0.0:10249
clusterCIDR: 10.244.0.0/16
clientConnection:
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 20
  burst: 40
  contentType: application/vnd.kubernetes.protobuf
  acceptContentTypes: ""
conntrack:
  maxPerCore: 32768
  min: 262144
configSyncPeriod: 15m0s
iptables:
  masqueradeAll: true
  masqueradeBit: 14
  syncPeriod: 30s
  minSyncPeriod: 1s
ipvs:
  scheduler: lc
  syncPeriod: 45s
  minSyncPeriod: 1s
  excludeCIDRs: ["192.168.100.0/24"]
  strictARP: true
  tcpTimeout: 0s
  tcpFinTimeout: 30s
  udpTimeout: 0s
nodePortAddresses: ["primary"]
detectLocalMode: ClusterCIDR
logging:
  format: json
  verbosity: 2
featureGates:
  SomeGate: true
winkernel:
  networkName: ""
somethingNew: 1
"#;
