//! Command-line flags and the `KubeProxyConfiguration` file, resolved into one
//! effective [`ProxyConfig`].
//!
//! Precedence follows kube-proxy (`cmd/kube-proxy/app/options.go`): without
//! `--config` the flags apply over kube-proxy's defaults; with `--config` the
//! file replaces the flag values wholesale, except the logging flags (`-v`,
//! `--log-format`) and `--hostname-override`, which still win when given, and
//! the flags that have no configuration field (`--master`, `--cleanup`,
//! `--write-config-to`, and ours: `--manifests`, `--drain-period`,
//! `--service-cluster-ip-range`, `--packet-filter`). kube-proxy drops the other flags silently;
//! we log a warning naming each one.
//!
//! The file is a `kubeproxy.config.k8s.io/v1alpha1` or `v1alpha2`
//! `KubeProxyConfiguration`. v1alpha2 is the layout of kube-proxy's KEP-784
//! (kubernetes/kubernetes PR #121830: sync periods at the top level, a
//! `linux` section, bind addresses as CIDRs plus a port, `nodeIPOverride`,
//! `detectLocal.clusterCIDRs`, `configHardFail`), with that PR's defaults.
//! Each version is read with its own paths, defaults and error names;
//! `--write-config-to` writes v1alpha1, which every kube-proxy reads.

use std::path::PathBuf;

/// The API version of the configuration file we write (`--write-config-to`);
/// we read it and [`API_VERSION_V1ALPHA2`].
pub const API_VERSION: &str = "kubeproxy.config.k8s.io/v1alpha1";
/// The restructured API version of kube-proxy's configuration (KEP-784), also
/// read by `--config`.
pub const API_VERSION_V1ALPHA2: &str = "kubeproxy.config.k8s.io/v1alpha2";
/// The kind of the configuration file we read and write.
pub const KIND: &str = "KubeProxyConfiguration";

/// IPVS schedulers accepted: the ones the kernel ships (kube-proxy's
/// `validateIPVSSchedulerMethod` list plus `mh`, `fo`, `ovf`, `twos`).
pub const SCHEDULERS: &[&str] = ipvs::SCHEDULERS;

/// An invalid configuration: start-up stops with this message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field (config path, with its flag when there is one) has a bad value.
    #[error("invalid value {value:?} for {field}: {reason}")]
    Invalid {
        /// `ipvs.syncPeriod (--ipvs-sync-period)` style name.
        field: String,
        /// The offending value as text.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not YAML/JSON.
    #[error("configuration file is not valid YAML: {0}")]
    Syntax(#[source] serde_saphyr::Error),
    /// Writing `--write-config-to` failed.
    #[error("cannot write configuration to {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn invalid(field: &str, value: impl ToString, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

mod file;
mod flags;
mod model;
#[cfg(test)]
mod testutil;
mod validate;
mod write;

pub use file::parse_config_file;
pub use flags::{
    kube_proxy_args, lookup, parse_go_bool, resolve, Check, Effect, Flags, Kind, KubeProxyArgs,
    KubeProxyFlag, Resolved, KUBE_PROXY_FLAGS,
};
pub use model::{
    ClientConnection, DetectLocal, IpvsConfig, LogFormat, NftElementUpdates, NodePortAddress,
    PacketFilter, ProxyConfig, DEFAULT_DRAIN_PERIOD,
};
pub use validate::validate;
pub use write::{to_yaml, write_config};
