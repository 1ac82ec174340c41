//! The agent's error: one type across its modules, each variant keeping the
//! error it came from (`#[source]`), one [`Error::metric_label`] for the
//! error-kind labels of the metrics, and [`Chain`] to log the whole chain.

use dataplane::nft::netlink::TxError;
use std::fmt;

/// Why an operation of the agent failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API server connection could not be configured (kubeconfig,
    /// in-cluster configuration, `--master`).
    #[error("cannot configure the API client")]
    Client(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A request to the API server failed.
    #[error("cannot list {what}")]
    Kube {
        /// What was requested.
        what: &'static str,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// Reading manifests failed.
    #[error("manifests")]
    Manifest(#[from] crate::source::ManifestError),
    /// proxy-core refused the configuration.
    #[error("configuration")]
    Config(#[from] proxy_core::ConfigError),
    /// Binding a server port failed with bindAddressHardFail.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The dataplane refused an operation (an address, the packet filter)
    /// or could not be set up or read.
    #[error("dataplane")]
    Dataplane(#[from] dataplane::Error),
    /// The dataplane could not apply a plan at all.
    #[error("dataplane unavailable")]
    Unavailable(#[source] dataplane::Error),
    /// A signal handler could not be installed.
    #[error("cannot install the signal handler")]
    Signal(#[source] std::io::Error),
    /// An IPVS request failed.
    #[error("ipvs")]
    Ipvs(#[from] ipvs::Error),
    /// A plan does not fit the in-memory kernel model ([`crate::proxier::ModelKernel`]).
    #[error("kernel model")]
    Model(#[from] proxy_core::ModelError),
    /// `show` could not ask the running agent.
    #[error("show")]
    Show(#[from] crate::control::ClientError),
}

impl Error {
    /// The error-kind label of the metrics (`kind` of
    /// `ipvs_proxy_netlink_errors_total`): IPVS errors by their kind
    /// (`exists`, `not_found`, `invalid`, ...), `refused` for the
    /// dataplane's addresses and packet filter, `unavailable` when a plan
    /// could not be applied at all, `invalid` for the kernel model.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Client(_) => "client",
            Error::Kube { .. } => "kube",
            Error::Manifest(_) => "manifest",
            Error::Config(_) => "config",
            Error::Bind { .. } => "bind",
            // A hung nft is a timeout, a missing one unavailable; the
            // kernel refusing addresses or a table is "refused".
            Error::Dataplane(dataplane::Error::Timeout { .. }) => "timeout",
            Error::Dataplane(dataplane::Error::NfNetlink(TxError::Exchange(
                ipvs::exchange::ExchangeError::Timeout(_),
            ))) => "timeout",
            Error::Dataplane(dataplane::Error::Spawn { .. }) => "unavailable",
            Error::Dataplane(_) => "refused",
            Error::Unavailable(_) => "unavailable",
            Error::Signal(_) => "signal",
            Error::Ipvs(e) => e.kind_label(),
            Error::Model(_) => "invalid",
            Error::Show(_) => "show",
        }
    }
}

/// Displays an error with its whole chain of sources, `outer: inner: ...`,
/// for logs and the command line. A source whose text its error already
/// shows (many libraries print `{op}: {source}`) is not repeated.
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        let mut next = self.0.source();
        while let Some(e) = next {
            let text = e.to_string();
            if !shown.contains(&text) {
                shown.push_str(": ");
                shown.push_str(&text);
            }
            next = e.source();
        }
        f.write_str(&shown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_reaches_the_kernel_errno_once() {
        let e = Error::Ipvs(ipvs::Error::Kernel {
            op: "add service TCP 10.96.0.10:80".into(),
            errno: 17,
            message: "File exists".into(),
        });
        assert_eq!(
            Chain(&e).to_string(),
            "ipvs: add service TCP 10.96.0.10:80: File exists (errno 17)"
        );
        assert_eq!(e.metric_label(), "exists");
        // A dataplane error that prints its own source: not repeated.
        let d = Error::Dataplane(dataplane::Error::Refused {
            op: "add address 10.96.0.10 to kube-ipvs0".into(),
            source: std::io::Error::from_raw_os_error(99),
        });
        let text = Chain(&d).to_string();
        assert!(
            text.starts_with("dataplane: add address 10.96.0.10 to kube-ipvs0: "),
            "{text}"
        );
        assert_eq!(text.matches("(os error 99)").count(), 1, "{text}");
        assert_eq!(d.metric_label(), "refused");
    }

    #[test]
    fn labels_stay_what_dashboards_see() {
        let unavailable = Error::Unavailable(dataplane::Error::NoInterface("kube-ipvs0".into()));
        assert_eq!(unavailable.metric_label(), "unavailable");
        assert_eq!(
            Error::Ipvs(ipvs::Error::IpvsUnavailable).metric_label(),
            "ipvs_unavailable"
        );
    }
}
