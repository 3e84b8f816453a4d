//! Running under systemd (`packaging/xwan.service`): the readiness protocol of `Type=notify`
//! (sd_notify(3)) and whether stderr is the journal, so logs go to it with their fields.
//! Written here rather than linked from libsystemd: both are a few lines of socket I/O, and
//! the agent then runs the same without systemd (the functions do nothing).

use std::{
    io,
    os::{linux::net::SocketAddrExt, unix::net::UnixDatagram},
};

/// What the agent tells systemd.
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    /// The first plan is committed: `systemctl start` returns.
    Ready { status: String },
    /// A reload begins; `Ready` follows once it is applied or rejected.
    Reloading,
    /// The agent removes what it created, then exits.
    Stopping,
    /// A line for `systemctl status`.
    Status(String),
}

impl Notice {
    /// The datagram sd_notify(3) defines: `KEY=value` lines.
    pub fn text(&self) -> String {
        let one_line = |s: &str| s.replace('\n', " ");
        match self {
            Notice::Ready { status } => format!("READY=1\nSTATUS={}\n", one_line(status)),
            Notice::Reloading => "RELOADING=1\nSTATUS=reloading the configuration\n".into(),
            Notice::Stopping => "STOPPING=1\nSTATUS=stopping: removing what xwan created\n".into(),
            Notice::Status(s) => format!("STATUS={}\n", one_line(s)),
        }
    }
}

/// Sends `notice` to `$NOTIFY_SOCKET` when systemd set one (a path, or `@name` for an
/// abstract socket); does nothing otherwise. Never blocks: the socket is a datagram socket
/// that systemd reads.
pub fn notify(notice: &Notice) -> io::Result<()> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let target = target.to_string_lossy().into_owned();
    let socket = UnixDatagram::unbound()?;
    let text = notice.text();
    match target.strip_prefix('@') {
        Some(name) => {
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            socket.send_to_addr(text.as_bytes(), &addr)?;
        }
        None => {
            socket.send_to(text.as_bytes(), &target)?;
        }
    }
    Ok(())
}

/// Whether stderr is the journal: systemd sets `$JOURNAL_STREAM` to the `device:inode` of
/// the stream it connects to stderr (systemd.exec(5)); a redirection in between changes it.
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    // fstat(2) of fd 2, through /proc so that no descriptor is duplicated.
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    journal_stream_matches(&stream, meta.dev(), meta.ino())
}

/// `$JOURNAL_STREAM` (`device:inode`, decimal) names the stream with this device and inode.
fn journal_stream_matches(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_sd_notify_lines() {
        let ready = Notice::Ready {
            status: "3 routers\n5 gateways".into(),
        };
        assert_eq!(ready.text(), "READY=1\nSTATUS=3 routers 5 gateways\n");
        assert!(Notice::Reloading.text().starts_with("RELOADING=1\n"));
        assert!(Notice::Stopping.text().starts_with("STOPPING=1\n"));
    }

    #[test]
    fn the_journal_stream_is_recognised_by_device_and_inode() {
        assert!(journal_stream_matches("8:12345", 8, 12345));
        assert!(!journal_stream_matches("8:12345", 8, 12346));
        assert!(!journal_stream_matches("812345", 8, 12345));
        assert!(!journal_stream_matches("x:1", 8, 1));
    }

    /// A datagram reaches a socket named like systemd's (a path).
    #[test]
    fn notify_sends_to_the_notify_socket() {
        let dir = std::env::temp_dir().join(format!("xwan-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        // SAFETY: this test alone in its process reads NOTIFY_SOCKET (no other test sets or
        // reads it).
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        notify(&Notice::Stopping).unwrap();
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert!(
            std::str::from_utf8(&buf[..n])
                .unwrap()
                .starts_with("STOPPING=1\n")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
