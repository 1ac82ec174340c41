//! Typed errors.

use std::time::Duration;

/// Errors of this crate. Kernel refusals keep their errno and say what was
/// being done; helpers such as [`Error::is_not_found`] classify them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `IPVS` generic-netlink family is not registered: the `ip_vs`
    /// module is not loaded or the kernel lacks `CONFIG_IP_VS`.
    #[error("the kernel has no IPVS generic-netlink family: load the ip_vs module (modprobe ip_vs) or use a kernel with CONFIG_IP_VS")]
    IpvsUnavailable,
    /// The kernel does not know the scheduler: its module (`ip_vs_NAME`) is
    /// not loaded and could not be auto-loaded.
    #[error("scheduler {0:?} is not available: load its module (modprobe ip_vs_{0})")]
    SchedulerUnavailable(String),
    /// The kernel refused an operation.
    #[error("{op}: {message} (errno {errno})")]
    Kernel {
        /// What was being done, e.g. `add service TCP 10.0.0.1:80`.
        op: String,
        /// The positive errno the kernel returned.
        errno: i32,
        /// Human text for the errno (and the kernel's extended ack, if any).
        message: String,
    },
    /// No answer within the deadline; the socket was reset.
    #[error("{op}: no answer from the kernel within {after:?}")]
    Timeout {
        /// What was being done.
        op: String,
        /// The deadline that passed.
        after: Duration,
    },
    /// A socket operation failed.
    #[error("netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// Entering or leaving a network namespace failed.
    #[error("network namespace {path}: {source}")]
    Netns {
        /// The namespace path (or `fd N`).
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel sent a message we could not decode.
    #[error("malformed message from the kernel: {0}")]
    Decode(String),
    /// The caller passed something the kernel cannot take (checked before sending).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A batched operation whose outcome is not known, or that was not sent
    /// because an earlier chunk of the batch failed (timeout, socket error).
    #[error("{op}: {reason}")]
    NotApplied {
        /// The operation, e.g. `add service TCP 10.0.0.1:80`.
        op: String,
        /// Why it was not applied or why its outcome is unknown.
        reason: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The kernel's errno, for kernel refusals.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Kernel { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// The object does not exist (`ESRCH` for services, `ENOENT` for real
    /// servers and daemons).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc_errno::ESRCH) | Some(libc_errno::ENOENT)
        )
    }

    /// The object already exists (`EEXIST`).
    pub fn is_already_exists(&self) -> bool {
        self.errno() == Some(libc_errno::EEXIST)
    }

    /// Same as [`Error::is_already_exists`].
    pub fn is_exists(&self) -> bool {
        self.is_already_exists()
    }

    /// The request was malformed or not allowed in this state (`EINVAL`).
    pub fn is_invalid(&self) -> bool {
        self.errno() == Some(libc_errno::EINVAL)
    }

    /// The caller lacks `CAP_NET_ADMIN` (`EPERM`).
    pub fn is_permission_denied(&self) -> bool {
        self.errno() == Some(libc_errno::EPERM)
    }

    /// The deadline passed without an answer.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// A short stable label for metrics (`not_found`, `exists`, `timeout`, ...).
    pub fn kind_label(&self) -> &'static str {
        match self {
            Error::IpvsUnavailable => "ipvs_unavailable",
            Error::SchedulerUnavailable(_) => "scheduler_unavailable",
            Error::Kernel { .. } if self.is_not_found() => "not_found",
            Error::Kernel { .. } if self.is_already_exists() => "exists",
            Error::Kernel { .. } if self.is_invalid() => "invalid",
            Error::Kernel { .. } if self.is_permission_denied() => "permission",
            Error::Kernel { .. } => "kernel",
            Error::Timeout { .. } => "timeout",
            Error::Io(_) => "io",
            Error::Netns { .. } => "netns",
            Error::Decode(_) => "decode",
            Error::InvalidArgument(_) => "invalid_argument",
            Error::NotApplied { .. } => "not_applied",
        }
    }
}

/// The errno values we classify (Linux numbering).
pub(crate) mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const ESRCH: i32 = 3;
    pub const EEXIST: i32 = 17;
    pub const EINVAL: i32 = 22;
}
