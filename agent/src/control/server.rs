//! The socket: binding it safely, and serving `GET /v1/show` on it.

use std::convert::Infallible;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{ViewSource, SHOW_PATH};

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another process answers on the path.
    #[error("another agent answers on {0}")]
    InUse(PathBuf),
    /// Something that is not a socket is in the way (never removed).
    #[error("{0} exists and is not a socket; not removing it")]
    NotASocket(PathBuf),
    /// The directory belongs to another user.
    #[error("{dir} belongs to uid {uid}, not to us; not serving there")]
    ForeignDirectory {
        /// The directory.
        dir: PathBuf,
        /// Its owner.
        uid: u32,
    },
    /// A system call failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was attempted.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A bound control socket; dropping it removes the socket file if it is
/// still ours.
#[derive(Debug)]
pub struct Bound {
    listener: UnixListener,
    path: PathBuf,
    id: (u64, u64),
}

impl Bound {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        // Only our own file: another agent may have taken the path over.
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if (m.dev(), m.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds the control socket at `path`: creates its directory (`0700`) when
/// missing, replaces a stale socket left by a dead agent (one nobody answers
/// on), refuses to touch anything else, and makes the socket `0600`.
pub fn bind(path: &Path) -> Result<Bound, BindError> {
    let io_err = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| BindError::Io { what, path, source }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::symlink_metadata(dir) {
            Ok(m) => {
                let euid = nix::unistd::geteuid().as_raw();
                if m.uid() != euid {
                    return Err(BindError::ForeignDirectory {
                        dir: dir.to_path_buf(),
                        uid: m.uid(),
                    });
                }
                if m.mode() & 0o077 != 0 {
                    tracing::warn!(dir = %dir.display(), mode = format!("{:o}", m.mode() & 0o7777), "the control socket's directory is open to other users; the socket itself is 0600");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(io_err("cannot create", dir))?;
            }
            Err(e) => return Err(io_err("cannot read", dir)(e)),
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse(path.to_path_buf())),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                tracing::info!(socket = %path.display(), "removing the stale socket of an agent that is gone");
                std::fs::remove_file(path).map_err(io_err("cannot remove", path))?;
            }
            Err(e) => return Err(io_err("cannot check", path)(e)),
        },
        Ok(_) => return Err(BindError::NotASocket(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("cannot read", path)(e)),
    }
    let listener = UnixListener::bind(path).map_err(io_err("cannot bind", path))?;
    // Bound first, then 0600: the directory (ours, 0700) keeps others out
    // in between.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("cannot chmod", path))?;
    let m = std::fs::symlink_metadata(path).map_err(io_err("cannot read", path))?;
    Ok(Bound {
        listener,
        path: path.to_path_buf(),
        id: (m.dev(), m.ino()),
    })
}

type Body = Full<Bytes>;

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

fn error_body(msg: &str) -> String {
    serde_json::json!({ "error": msg }).to_string() + "\n"
}

/// Decodes `%XX` escapes (and `+` as a space) of a query value.
pub(super) fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `service` parameter of a query string.
pub(super) fn service_param(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "service")
        .map(|(_, v)| percent_decode(v))
        .filter(|v| !v.is_empty())
}

async fn handle<B>(req: Request<B>, source: Arc<dyn ViewSource>) -> Response<Body> {
    if req.uri().path() != SHOW_PATH {
        return respond(
            StatusCode::NOT_FOUND,
            "application/json",
            error_body("not found; try GET /v1/show[?service=NAMESPACE/NAME]"),
        );
    }
    if req.method() != hyper::Method::GET {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "application/json",
            error_body("only GET"),
        );
    }
    let only = service_param(req.uri().query());
    match source.view(only.as_deref()).await {
        Ok(v) => match serde_json::to_string(&v) {
            Ok(s) => respond(StatusCode::OK, "application/json", s + "\n"),
            Err(e) => respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/json",
                error_body(&e.to_string()),
            ),
        },
        Err(e) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            error_body(&e),
        ),
    }
}

/// Serves `bound` until `close` is cancelled: the socket file goes then,
/// and the requests in flight are answered before it returns (dropping the
/// future ends them at once). Peers of another uid than ours (root, for the
/// agent) are refused even if the file mode let them connect.
pub async fn serve(bound: Bound, source: Arc<dyn ViewSource>, close: CancellationToken) {
    let euid = nix::unistd::geteuid().as_raw();
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = close.cancelled() => break,
            accepted = bound.listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let uid = stream.peer_cred().map(|c| c.uid()).ok();
                    let src = source.clone();
                    let close = close.clone();
                    conns.spawn(async move {
                        let allowed = uid == Some(euid) || uid == Some(0);
                        let svc = hyper::service::service_fn(move |req| {
                            let src = src.clone();
                            async move {
                                if !allowed {
                                    return Ok::<_, Infallible>(respond(
                                        StatusCode::FORBIDDEN,
                                        "application/json",
                                        error_body("only root may ask"),
                                    ));
                                }
                                Ok::<_, Infallible>(handle(req, src).await)
                            }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc);
                        if let Err(e) = crate::http::graceful(conn, &close).await {
                            tracing::debug!(error = %e, "control connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // New clients find no agent from here on.
    drop(bound);
    while conns.join_next().await.is_some() {}
}
