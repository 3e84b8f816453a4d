//! The local control API: one JSON request and one JSON answer per connection, over a Unix
//! socket that only root can open (mode 0600). Used by `xwan status`, `reload`, `stop`.
//! The agent's side is [`server`]: it serves every connection in a task of its own, so that
//! no client can hold up the daemon.

pub mod server;

use std::{
    io,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use crate::status::Status;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "request", rename_all = "kebab-case")]
pub enum Request {
    Status,
    Reload,
    /// Detach and remove everything the agent created, then exit.
    Stop,
    /// Which rule, router and gateway a packet takes now.
    Explain(crate::explain::Query),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "answer", rename_all = "kebab-case")]
pub enum Answer {
    Status(Status),
    Reloaded { epoch: u32 },
    Stopping,
    Explained { text: String },
    Error { message: String },
}

/// Binds the control socket at `path` (replacing a stale one), root-only.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Client side: sends `request` to the agent at `path` and returns its answer.
pub async fn call(path: &PathBuf, request: &Request) -> io::Result<Answer> {
    let mut s = UnixStream::connect(path).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot reach the agent at {}: {e} (is `xwan run` running, and are you root?)",
                path.display()
            ),
        )
    })?;
    let mut v = serde_json::to_vec(request).map_err(io::Error::other)?;
    v.push(b'\n');
    // An agent that refuses the connection (too many clients) answers and closes without
    // reading: its answer says why, better than the broken pipe.
    let sent = s.write_all(&v).await;
    let mut line = String::new();
    let read = BufReader::new(s).read_line(&mut line).await;
    if line.is_empty() {
        sent?;
        read?;
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the agent at {} closed without answering", path.display()),
        ));
    }
    serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
