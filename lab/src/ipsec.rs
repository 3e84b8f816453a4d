//! What keys the lab's real tunnels ([`crate::topology::Tunnels::Ipsec`]): random manual keys
//! for WAN1 and WAN3, whose SAs the agents install, and strongSwan for WAN2 ([`IKE_LINK`]):
//! one charon per site negotiating IKEv2 with a random pre-shared key, its CHILD_SA marked
//! with the link's VTI key. Also reads every SA of a namespace with its byte and packet
//! counters, over XFRM netlink (the agent's own reader).
//!
//! Each charon runs in its site's namespace with a private `/run` (two charons would share
//! its pid file otherwise), its own `strongswan.conf`, vici socket and log in the lab's
//! directory; killed (and waited for) on drop. Key material lives in [`Secrets`], whose
//! `Debug` does not show it, and in root-only files; tests assert it appears in no output.
//!
//! What a reader may change: the IKE and ESP proposals (keep them what the examples use),
//! which link is IKE-keyed (then `config` follows).

use std::{
    fmt,
    io::Write as _,
    net::Ipv4Addr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use xwan::xfrm::{SaInfo, XfrmSocket, client::PolicyInfo};

use crate::{
    config::key_file,
    netns::Netns,
    topology::{LINKS, UNDERLAYS},
};

/// The link strongSwan keys (WAN2); the agents key the others.
pub const IKE_LINK: usize = 1;
/// The VTI key (= xfrm mark) of link `i`, as in `examples/ipsec/`.
pub fn vti_key(link: usize) -> u32 {
    101 + link as u32
}

const CHARON: &str = "/usr/lib/ipsec/charon";
/// The IKE connection and CHILD_SA name, on both sites.
const CONNECTION: &str = "wan2";
/// charon under an emulated CPU: MODP-2048 takes seconds, an exchange may be retransmitted.
const IKE_TIMEOUT: Duration = Duration::from_secs(90);

/// Key material the lab generated (hex): manual keys and the PSK. `Debug` shows none of it.
#[derive(Default)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// Whether `text` contains any secret, or a 16-digit piece of one.
    pub fn found_in(&self, text: &str) -> bool {
        let text = text.to_ascii_lowercase();
        // Hex digits are ASCII: every 16-byte piece is a whole string.
        self.0
            .iter()
            .flat_map(|s| s.as_bytes().chunks(16))
            .any(|piece| text.contains(std::str::from_utf8(piece).unwrap_or_default()))
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} hidden)", self.0.len())
    }
}

/// Writes both agents' key files (mode 0600) for the manual-key links: fresh random AES-256-GCM
/// keys, the branch's `out` being the head office's `in` and vice versa.
pub fn write_keys(branch_dir: &Path, headoffice_dir: &Path, secrets: &mut Secrets) -> Result<()> {
    for (i, l) in LINKS.iter().enumerate() {
        if i == IKE_LINK {
            continue;
        }
        // aes256gcm16: a 32-byte key and a 4-byte salt.
        let (a, b) = (random_hex(36)?, random_hex(36)?);
        write_private(
            &key_file(branch_dir, l.name),
            &format!("in = 0x{a}\nout = 0x{b}\n"),
        )?;
        write_private(
            &key_file(headoffice_dir, l.name),
            &format!("in = 0x{b}\nout = 0x{a}\n"),
        )?;
        secrets.0.extend([a, b]);
    }
    Ok(())
}

/// The two charons keying WAN2.
pub struct Ike {
    pub branch: Charon,
    pub headoffice: Charon,
}

impl Ike {
    /// Starts a charon in each site, loads the connection, and has the branch initiate it;
    /// returns once the CHILD_SA is installed on both sides.
    pub fn start(
        branch: &Netns,
        headoffice: &Netns,
        dir: &Path,
        secrets: &mut Secrets,
    ) -> Result<Ike> {
        let psk = random_hex(32)?;
        let (_, b, h) = UNDERLAYS[IKE_LINK];
        let branch = Charon::start(
            branch,
            &dir.join("branch"),
            (b, "branch"),
            (h, "headoffice"),
            &psk,
        )?;
        let headoffice = Charon::start(
            headoffice,
            &dir.join("headoffice"),
            (h, "headoffice"),
            (b, "branch"),
            &psk,
        )?;
        secrets.0.push(psk);
        let ike = Ike { branch, headoffice };
        ike.initiate()?;
        Ok(ike)
    }

    /// The branch (re)initiates the CHILD_SA (and the IKE_SA if there is none).
    pub fn initiate(&self) -> Result<()> {
        let timeout = IKE_TIMEOUT.as_secs().to_string();
        self.branch
            .swanctl(&["--initiate", "--child", CONNECTION, "--timeout", &timeout])
            .map(drop)
    }

    /// The branch closes the CHILD_SA (a DELETE to the head office): both sides remove its
    /// SAs and policies; the IKE_SA stays.
    pub fn terminate(&self) -> Result<()> {
        self.branch
            .swanctl(&["--terminate", "--child", CONNECTION, "--timeout", "30"])
            .map(drop)
    }
}

/// One charon process in a site's namespace.
pub struct Charon {
    child: Child,
    dir: PathBuf,
}

impl Charon {
    fn start(
        ns: &Netns,
        dir: &Path,
        (local, local_id): (Ipv4Addr, &str),
        (remote, remote_id): (Ipv4Addr, &str),
        psk: &str,
    ) -> Result<Charon> {
        if !Path::new(CHARON).is_file() {
            bail!(
                "strongSwan's charon is not installed ({CHARON}): `cargo xtask setup` as root \
                 installs it (Debian: strongswan-charon strongswan-swanctl)"
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let key = vti_key(IKE_LINK);
        // The VTIs carry the traffic: no routes of charon's (table 220).
        write_private(
            &dir.join("strongswan.conf"),
            &format!(
                "charon {{\n  install_routes = no\n  load = random nonce aes sha1 sha2 hmac kdf gmp \
                 pem pkcs1 x509 pubkey kernel-netlink socket-default vici\n  plugins {{\n    \
                 vici {{\n      socket = unix://{vici}\n    }}\n  }}\n  filelog {{\n    lab {{\n      \
                 path = {log}\n      time_format = %T\n      default = 1\n      flush_line = yes\n    \
                 }}\n  }}\n}}\nswanctl {{\n  load = pem pkcs1 x509 pubkey random\n}}\n",
                vici = dir.join("charon.vici").display(),
                log = dir.join("charon.log").display(),
            ),
        )?;
        // As examples/ipsec/strongswan/*.swanctl.conf's wan2, without their automatic restarts
        // (start/close/dpd actions): the test decides when the SA goes and comes back.
        write_private(
            &dir.join("swanctl.conf"),
            &format!(
                "connections {{\n  {CONNECTION} {{\n    version = 2\n    local_addrs = {local}\n    \
                 remote_addrs = {remote}\n    proposals = aes256-sha256-modp2048\n    local {{\n      \
                 auth = psk\n      id = {local_id}-{CONNECTION}\n    }}\n    remote {{\n      auth = psk\n      \
                 id = {remote_id}-{CONNECTION}\n    }}\n    children {{\n      {CONNECTION} {{\n        \
                 mode = tunnel\n        local_ts = 0.0.0.0/0\n        remote_ts = 0.0.0.0/0\n        \
                 esp_proposals = aes256gcm16\n        mark_in = {key}\n        mark_out = {key}\n      \
                 }}\n    }}\n  }}\n}}\nsecrets {{\n  ike-{CONNECTION} {{\n    id-a = {local_id}-{CONNECTION}\n    \
                 id-b = {remote_id}-{CONNECTION}\n    secret = 0x{psk}\n  }}\n}}\n"
            ),
        )?;
        let out = std::fs::File::create(dir.join("charon.out"))?;
        // `ip netns exec` gives charon a mount namespace of its own: a private /run there.
        let child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "sh", "-c"])
            .arg("mount -t tmpfs xwan-lab-run /run && exec \"$0\"")
            .arg(CHARON)
            .env("STRONGSWAN_CONF", dir.join("strongswan.conf"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting charon in namespace {}", ns.name()))?;
        let mut charon = Charon {
            child,
            dir: dir.to_owned(),
        };
        let t = Instant::now();
        while !dir.join("charon.vici").exists() {
            if let Some(st) = charon.child.try_wait()? {
                bail!("charon in {} exited ({st}):\n{}", ns.name(), charon.log());
            }
            if t.elapsed() > IKE_TIMEOUT {
                bail!(
                    "charon in {} opened no vici socket within {IKE_TIMEOUT:?}:\n{}",
                    ns.name(),
                    charon.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let file = dir.join("swanctl.conf");
        charon.swanctl(&[
            "--load-all",
            "--noprompt",
            "--file",
            &file.display().to_string(),
        ])?;
        Ok(charon)
    }

    /// `swanctl ARGS` against this charon; its output (kept in `swanctl.out` too).
    pub fn swanctl(&self, args: &[&str]) -> Result<String> {
        let uri = format!("unix://{}", self.dir.join("charon.vici").display());
        let out = Command::new("swanctl")
            .args(args)
            .args(["--uri", &uri])
            .env("STRONGSWAN_CONF", self.dir.join("strongswan.conf"))
            .stdin(Stdio::null())
            .output()
            .context("running swanctl (Debian: strongswan-swanctl)")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("swanctl.out"))?;
        writeln!(log, "$ swanctl {}\n{text}", args.join(" "))?;
        if !out.status.success() {
            bail!(
                "swanctl {} failed ({}):\n{text}\n---- charon log\n{}",
                args.join(" "),
                out.status,
                self.log()
            );
        }
        Ok(text)
    }

    /// charon's log and its standard output.
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!("{}{}", read("charon.out"), read("charon.log"))
    }

    /// Every file charon and swanctl wrote, but its configuration (which holds the PSK).
    pub fn outputs(&self) -> String {
        ["charon.out", "charon.log", "swanctl.out"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect()
    }

    /// SIGTERM (charon removes its SAs and policies), SIGKILL after 10 s.
    pub fn stop(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        // SAFETY: plain syscall on our child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while self.child.try_wait()?.is_none() {
            if t.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!(
                    "charon (pid {}) ignored SIGTERM for 10 s: killed",
                    self.child.id()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("xwan lab: {e:#}");
        }
    }
}

/// Every SA of namespace `ns`, with its counters (no key material).
pub fn sas(ns: &Netns) -> Result<Vec<SaInfo>> {
    ns.run(|| {
        let mut sock = XfrmSocket::open().context("opening XFRM netlink")?;
        sock.sas().context("dumping the SAs")
    })
}

/// Every xfrm policy of namespace `ns`.
pub fn policies(ns: &Netns) -> Result<Vec<PolicyInfo>> {
    ns.run(|| {
        let mut sock = XfrmSocket::open().context("opening XFRM netlink")?;
        sock.policies().context("dumping the policies")
    })
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .context("reading /dev/urandom")?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a root-only file (the agent refuses key files others can read).
fn write_private(path: &Path, text: &str) -> Result<()> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}
