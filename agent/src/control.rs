//! The local control API: one JSON request and one JSON answer per connection, over a Unix
//! socket that only root can open (mode 0600). Used by `xwan status`, `reload`, `explain`
//! and `stop` (answered once everything is removed). `events` is the one stream:
//! [`Answer::Listening`], then one [`Answer::Event`] line per event (or [`Answer::Lost`] for
//! those a slow client missed) until either side closes ([`listen`]).
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
    /// Every event from now on, as a stream of answers.
    Events,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "answer", rename_all = "kebab-case")]
pub enum Answer {
    Status(Status),
    Reloaded {
        epoch: u32,
    },
    /// `stop`: everything the agent created is removed; it exits.
    Stopped,
    Explained {
        text: String,
    },
    Error {
        message: String,
    },
    /// `events`: subscribed; the events follow.
    Listening,
    Event(crate::events::Event),
    /// `events`: this many events were not sent, the client reading too slowly.
    Lost {
        events: u64,
    },
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
    let mut lines = send(path, request).await?;
    read_answer(path, &mut lines).await
}

/// Client side of `events`: calls `on` with every answer (the first is
/// [`Answer::Listening`] unless the agent refused) until it returns false or the agent closes
/// the stream (it stopped).
pub async fn listen(path: &PathBuf, mut on: impl FnMut(Answer) -> bool) -> io::Result<()> {
    let mut lines = send(path, &Request::Events).await?;
    loop {
        match read_answer(path, &mut lines).await {
            Ok(a) => {
                if !on(a) {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Connects to the agent at `path` and sends `request`; its answers are to be read.
async fn send(path: &PathBuf, request: &Request) -> io::Result<BufReader<UnixStream>> {
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
    if let Err(e) = s.write_all(&v).await
        && !matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        )
    {
        return Err(e);
    }
    Ok(BufReader::new(s))
}

/// The next answer line.
async fn read_answer(path: &Path, lines: &mut BufReader<UnixStream>) -> io::Result<Answer> {
    let mut line = String::new();
    let read = lines.read_line(&mut line).await;
    if line.is_empty() {
        read?;
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the agent at {} closed without answering", path.display()),
        ));
    }
    serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
