//! Typed errors of the dataplane.

use std::io;
use std::net::IpAddr;
use std::path::PathBuf;

/// Errors of this crate. Each says what was being done.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An rtnetlink request (links, addresses) failed.
    #[error("{op}: {source}")]
    Netlink {
        /// What was being done, e.g. `add address 10.96.0.1/32 to kube-ipvs0`.
        op: String,
        /// The underlying error.
        #[source]
        source: rtnetlink::Error,
    },
    /// The kernel refused one request of a batch.
    #[error("{op}: {source}")]
    Refused {
        /// What was being done, e.g. `add address 10.96.0.1 to kube-ipvs0`.
        op: String,
        /// The errno the kernel answered with.
        #[source]
        source: io::Error,
    },
    /// A batch of requests could not be sent or was not answered in time;
    /// which of its requests took effect is unknown.
    #[error("{op}: {source}")]
    Batch {
        /// What was being done, e.g. `add addresses (3000 requests) on kube-ipvs0`.
        op: String,
        /// The socket error, or `TimedOut`.
        #[source]
        source: io::Error,
    },
    /// Opening a netlink socket failed.
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    /// An interface with our name exists but is not a dummy interface: we
    /// never take over (or delete) somebody else's interface.
    #[error(
        "interface {name} exists but is a {kind:?} interface, not a dummy one; refusing to use it"
    )]
    NotADummy {
        /// Interface name.
        name: String,
        /// The kind the kernel reports (e.g. `veth`), or `none`.
        kind: String,
    },
    /// The interface we need does not exist.
    #[error("interface {0} does not exist")]
    NoInterface(String),
    /// Reading or writing a sysctl under `/proc/sys` failed.
    #[error("sysctl {key}: {source}")]
    Sysctl {
        /// Dotted key, e.g. `net.ipv4.vs.conntrack`.
        key: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A helper program (nft, modprobe) could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A helper program did not finish within its deadline and was killed.
    #[error("{program} did not finish within {after:?}; killed")]
    Timeout {
        /// The program.
        program: PathBuf,
        /// The deadline.
        after: std::time::Duration,
    },
    /// `nft` refused a ruleset or command.
    #[error("nft {op} failed ({status}): {stderr}")]
    Nft {
        /// What was being done (`apply table inet ipvs-proxy`, ...).
        op: String,
        /// The exit status.
        status: String,
        /// What nft printed on stderr.
        stderr: String,
    },
    /// An nf_tables element transaction over nfnetlink failed (refused as
    /// a whole, or not answered in time).
    #[error("nf_tables element update: {0}")]
    NfNetlink(#[from] crate::nft::netlink::TxError),
    /// An IPVS request failed.
    #[error("ipvs: {0}")]
    Ipvs(#[from] ipvs::Error),
    /// Preflight checks found something missing; every item is named.
    #[error("preflight failed: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Preflight(Vec<crate::preflight::Missing>),
    /// An address of the wrong kind was given (e.g. unspecified or multicast).
    #[error("refusing to bind {0} on the dummy interface: not a unicast address")]
    BadAddress(IpAddr),
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The positive errno of a netlink error, if it is one.
pub(crate) fn netlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}
