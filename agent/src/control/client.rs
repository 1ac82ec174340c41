//! The client `show` uses to ask the running agent.

use std::io;
use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::{View, ANSWER_TIMEOUT, CONNECT_TIMEOUT, SHOW_PATH};

/// Why `show` got no view from the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket (no file, or a stale one).
    #[error("no agent answers on {path}: {source}")]
    NoAgent {
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Not allowed to connect (not root).
    #[error("cannot connect to {path}: {source} (show needs root)")]
    Denied {
        /// The socket.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Anything else on the way.
    #[error("asking the agent on {path}: {detail}")]
    Failed {
        /// The socket.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}

/// Asks the agent on `path` for its view (one Service when `only` is set).
pub async fn fetch(path: &Path, only: Option<&str>) -> Result<View, ClientError> {
    let failed = |detail: String| ClientError::Failed {
        path: path.to_path_buf(),
        detail,
    };
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(path)).await {
        Err(_) => return Err(failed("timed out connecting".into())),
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let path = path.to_path_buf();
            return Err(match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ClientError::NoAgent { path, source: e }
                }
                io::ErrorKind::PermissionDenied => ClientError::Denied { path, source: e },
                _ => ClientError::Failed {
                    path,
                    detail: e.to_string(),
                },
            });
        }
    };
    let mut uri = SHOW_PATH.to_string();
    if let Some(o) = only {
        uri.push_str("?service=");
        for b in o.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
                uri.push(b as char);
            } else {
                uri.push_str(&format!("%{b:02X}"));
            }
        }
    }
    let ask = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(conn);
        let req = Request::get(uri)
            .header(hyper::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        driver.abort();
        if status != StatusCode::OK {
            let msg = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
            return Err(format!("the agent answered {status}: {msg}"));
        }
        serde_json::from_slice::<View>(&body).map_err(|e| format!("unreadable answer: {e}"))
    };
    match tokio::time::timeout(ANSWER_TIMEOUT, ask).await {
        Err(_) => Err(failed(format!("no answer in {ANSWER_TIMEOUT:?}"))),
        Ok(r) => r.map_err(failed),
    }
}
