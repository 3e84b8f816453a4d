//! What keys the lab's real tunnels ([`crate::topology::Tunnels::Ipsec`]), as its [`Keying`]
//! says, and reads every SA of a namespace with its byte and packet counters, over XFRM
//! netlink (the agent's own reader).
//!
//! * [`Keying::Mixed`]: random manual keys for WAN1 and WAN3, whose SAs the agents install,
//!   and strongSwan for WAN2 ([`IKE_LINK`]) with a configuration the lab writes (IKEv2, a
//!   random pre-shared key, the CHILD_SA marked with the link's VTI key), initiated by the
//!   branch when the test says so.
//! * [`Keying::Strongswan`]: strongSwan keys all three links with the shipped pair,
//!   `examples/ipsec/strongswan/{headoffice,branch}.swanctl.conf`, loaded byte for byte but for
//!   their three `secret = "CHANGE-ME-wanN"` lines ([`shipped_swanctl`]): the head office
//!   traps, the branch starts every connection on load and restarts a CHILD_SA its peer closes.
//!
//! Each charon runs in its site's namespace with a private `/run` (two charons would share
//! its pid file otherwise), its own `strongswan.conf`, vici socket and log in the lab's
//! directory; killed (and waited for) on drop. Key material lives in [`Secrets`], whose
//! `Debug` does not show it, and in root-only files; tests assert it appears in no output.
//!
//! What a reader may change: the IKE and ESP proposals of the mixed keying (keep them what
//! the examples use), which link is IKE-keyed there (then `config` follows).

use std::{
    fmt,
    io::Write as _,
    net::{IpAddr, Ipv4Addr},
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
    topology::{Keying, LINKS, UNDERLAYS},
};

/// The link strongSwan keys with [`Keying::Mixed`] (WAN2); the agents key the others.
pub const IKE_LINK: usize = 1;
/// The VTI key (= xfrm mark) of link `i`, as in `examples/ipsec/`.
pub fn vti_key(link: usize) -> u32 {
    101 + link as u32
}

/// The IKE connection and CHILD_SA of link `link` (`wan1`..`wan3`), on both sites, as in the
/// shipped pair (the mixed keying's `wan2` too).
pub fn connection(link: usize) -> String {
    format!("wan{}", link + 1)
}

const CHARON: &str = "/usr/lib/ipsec/charon";
const SHIPPED_BRANCH: &str = include_str!("../../examples/ipsec/strongswan/branch.swanctl.conf");
const SHIPPED_HEADOFFICE: &str =
    include_str!("../../examples/ipsec/strongswan/headoffice.swanctl.conf");
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

/// Writes both agents' key files (mode 0600) for the manual-key links (none with
/// [`Keying::Strongswan`]): fresh random AES-256-GCM keys, the branch's `out` being the head
/// office's `in` and vice versa.
pub fn write_keys(
    keying: Keying,
    branch_dir: &Path,
    headoffice_dir: &Path,
    secrets: &mut Secrets,
) -> Result<()> {
    for (i, l) in LINKS.iter().enumerate() {
        if keying.by_ike(i) {
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

/// The two charons keying the IKE links.
pub struct Ike {
    pub keying: Keying,
    pub branch: Charon,
    pub headoffice: Charon,
    /// How long IKE took to key every IKE-keyed link both ways on both sites: from starting
    /// the branch's charon ([`Keying::Strongswan`]), or the branch's `swanctl --initiate`
    /// ([`Keying::Mixed`]).
    pub bring_up: Duration,
}

impl Ike {
    /// Starts a charon in each site with its configuration and returns once every IKE-keyed
    /// link has an SA each way on both sites. [`Keying::Mixed`]: the lab's WAN2 connection,
    /// which the branch then initiates with swanctl. [`Keying::Strongswan`]: the shipped pair,
    /// the head office's first (it traps and answers), then the branch's, which starts every
    /// connection on its own when loaded.
    pub fn start(
        keying: Keying,
        branch: &Netns,
        headoffice: &Netns,
        dir: &Path,
        secrets: &mut Secrets,
    ) -> Result<Ike> {
        match keying {
            Keying::Mixed => {
                let psk = random_hex(32)?;
                let (_, b, h) = UNDERLAYS[IKE_LINK];
                let branch_conf = mixed_swanctl((b, "branch"), (h, "headoffice"), &psk);
                let headoffice_conf = mixed_swanctl((h, "headoffice"), (b, "branch"), &psk);
                secrets.0.push(psk);
                let mut ike = Ike {
                    keying,
                    branch: Charon::start(branch, &dir.join("branch"), &branch_conf)?,
                    headoffice: Charon::start(
                        headoffice,
                        &dir.join("headoffice"),
                        &headoffice_conf,
                    )?,
                    bring_up: Duration::ZERO,
                };
                let t = Instant::now();
                ike.initiate()?;
                ike.bring_up = t.elapsed();
                Ok(ike)
            }
            Keying::Strongswan => {
                let psks = [random_hex(32)?, random_hex(32)?, random_hex(32)?];
                let headoffice_conf = shipped_swanctl(SHIPPED_HEADOFFICE, &psks)?;
                let branch_conf = shipped_swanctl(SHIPPED_BRANCH, &psks)?;
                secrets.0.extend(psks);
                let ho_charon =
                    Charon::start(headoffice, &dir.join("headoffice"), &headoffice_conf)?;
                let t = Instant::now();
                let branch_charon = Charon::start(branch, &dir.join("branch"), &branch_conf)?;
                let mut ike = Ike {
                    keying,
                    branch: branch_charon,
                    headoffice: ho_charon,
                    bring_up: Duration::ZERO,
                };
                loop {
                    let counts = [sa_counts(branch)?, sa_counts(headoffice)?];
                    if counts.iter().flatten().flatten().all(|&n| n > 0) {
                        break;
                    }
                    if t.elapsed() > IKE_TIMEOUT {
                        bail!(
                            "the shipped strongSwan pair installed no SA pair on every link \
                             within {IKE_TIMEOUT:?} (ESP SAs per link, branch→head office and \
                             back, on the branch and the head office: {counts:?})\n---- branch \
                             charon\n{}\n---- head office charon\n{}",
                            ike.branch.log(),
                            ike.headoffice.log()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                ike.bring_up = t.elapsed();
                Ok(ike)
            }
        }
    }

    /// The branch (re)initiates WAN2's CHILD_SA (and the IKE_SA if there is none); with the
    /// mixed keying, where nothing starts it by itself.
    pub fn initiate(&self) -> Result<()> {
        self.branch.initiate_child(&connection(IKE_LINK))
    }

    /// The branch closes WAN2's CHILD_SA (a DELETE to the head office): both sides remove its
    /// SAs and policies; the IKE_SA stays.
    pub fn terminate(&self) -> Result<()> {
        self.branch.terminate_child(&connection(IKE_LINK))
    }
}

/// The lab's own configuration for WAN2 under [`Keying::Mixed`]: as the shipped pair's `wan2`,
/// without their automatic starts and restarts (start/close/dpd actions): the test decides
/// when the SA goes and comes back.
fn mixed_swanctl(
    (local, local_id): (Ipv4Addr, &str),
    (remote, remote_id): (Ipv4Addr, &str),
    psk: &str,
) -> String {
    let key = vti_key(IKE_LINK);
    let conn = connection(IKE_LINK);
    format!(
        "connections {{\n  {conn} {{\n    version = 2\n    local_addrs = {local}\n    \
         remote_addrs = {remote}\n    proposals = aes256-sha256-modp2048\n    local {{\n      \
         auth = psk\n      id = {local_id}-{conn}\n    }}\n    remote {{\n      auth = psk\n      \
         id = {remote_id}-{conn}\n    }}\n    children {{\n      {conn} {{\n        \
         mode = tunnel\n        local_ts = 0.0.0.0/0\n        remote_ts = 0.0.0.0/0\n        \
         esp_proposals = aes256gcm16\n        mark_in = {key}\n        mark_out = {key}\n      \
         }}\n    }}\n  }}\n}}\nsecrets {{\n  ike-{conn} {{\n    id-a = {local_id}-{conn}\n    \
         id-b = {remote_id}-{conn}\n    secret = 0x{psk}\n  }}\n}}\n"
    )
}

/// A shipped `swanctl.conf` (`shipped`) with its three `secret = "CHANGE-ME-wanN"` lines
/// replaced by `secret = 0x<psks[N-1]>` (same indentation); every other byte as shipped.
pub fn shipped_swanctl(shipped: &str, psks: &[String; 3]) -> Result<String> {
    let mut replaced = [false; 3];
    let mut out = String::with_capacity(shipped.len() + 3 * 64);
    for line in shipped.split_inclusive('\n') {
        let body = line.trim_end_matches('\n');
        let indent = &body[..body.len() - body.trim_start().len()];
        let link = (0..3).find(|&i| body.trim() == format!("secret = \"CHANGE-ME-wan{}\"", i + 1));
        match link {
            Some(i) if !replaced[i] => {
                replaced[i] = true;
                out.push_str(&format!("{indent}secret = 0x{}", psks[i]));
                out.push_str(&line[body.len()..]);
            }
            Some(i) => bail!(
                "the shipped swanctl.conf has two `secret = \"CHANGE-ME-wan{}\"` lines",
                i + 1
            ),
            None => out.push_str(line),
        }
    }
    if let Some(i) = replaced.iter().position(|r| !r) {
        bail!(
            "the shipped swanctl.conf has no `secret = \"CHANGE-ME-wan{}\"` line for the lab to \
             replace (examples/ipsec/strongswan/)",
            i + 1
        );
    }
    Ok(out)
}

/// One charon process in a site's namespace.
pub struct Charon {
    child: Child,
    dir: PathBuf,
}

impl Charon {
    /// Starts charon in `ns` with the lab's `strongswan.conf` (no routes, the lab's vici
    /// socket and log), and loads `swanctl` (the text of a `swanctl.conf`).
    fn start(ns: &Netns, dir: &Path, swanctl: &str) -> Result<Charon> {
        if !Path::new(CHARON).is_file() {
            bail!(
                "strongSwan's charon is not installed ({CHARON}): `cargo xtask setup` as root \
                 installs it (Debian: strongswan-charon strongswan-swanctl)"
            );
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
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
        write_private(&dir.join("swanctl.conf"), swanctl)?;
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

    /// Initiates CHILD_SA `child` (and its IKE_SA if there is none); returns once it is up.
    pub fn initiate_child(&self, child: &str) -> Result<()> {
        let timeout = IKE_TIMEOUT.as_secs().to_string();
        self.swanctl(&["--initiate", "--child", child, "--timeout", &timeout])
            .map(drop)
    }

    /// Closes CHILD_SA `child` (a DELETE to the peer): both sides remove its SAs and
    /// policies; the IKE_SA stays. Returns once the peer answered.
    pub fn terminate_child(&self, child: &str) -> Result<()> {
        self.swanctl(&["--terminate", "--child", child, "--timeout", "30"])
            .map(drop)
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

/// Keyed ESP SAs of each link in namespace `ns`: [link][0] branch → head office, [link][1]
/// back. Larval states do not count: an acquire's (SPI 0) nor an SPI charon allocated for a
/// CHILD_SA still being negotiated ([`SaInfo::keyed`], as the agent decides).
pub fn sa_counts(ns: &Netns) -> Result<[[usize; 2]; 3]> {
    per_link(ns, |s| usize::from(s.spi != 0 && s.keyed))
}

/// Packets through each link's ESP SAs as namespace `ns` counts them, laid out as
/// [`sa_counts`] (a site's outbound SA for one direction, its inbound SA for the other).
pub fn sa_packets(ns: &Netns) -> Result<[[u64; 2]; 3]> {
    per_link(ns, |s| s.packets)
}

/// The sum of `value` over the ESP SAs of `ns` between each link's underlay addresses:
/// [link][0] branch → head office, [link][1] back.
fn per_link<T: Copy + Default + std::ops::Add<Output = T>>(
    ns: &Netns,
    value: impl Fn(&SaInfo) -> T,
) -> Result<[[T; 2]; 3]> {
    let sas = sas(ns)?;
    Ok(std::array::from_fn(|l| {
        let (_, b, h) = UNDERLAYS[l];
        let sum = |src: Ipv4Addr, dst: Ipv4Addr| {
            sas.iter()
                .filter(|s| s.proto == libc::IPPROTO_ESP as u8)
                .filter(|s| s.src == IpAddr::from(src) && s.dst == IpAddr::from(dst))
                .fold(T::default(), |acc, s| acc + value(s))
        };
        [sum(b, h), sum(h, b)]
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The lab loads the shipped pair as shipped: the only lines that differ are the three
    /// placeholder secrets, each replaced by its link's PSK (the same on both sites).
    #[test]
    fn shipped_pair_differs_only_in_its_three_secrets() {
        let psks = ["aa".repeat(32), "bb".repeat(32), "cc".repeat(32)];
        for shipped in [SHIPPED_BRANCH, SHIPPED_HEADOFFICE] {
            let loaded = shipped_swanctl(shipped, &psks).unwrap();
            let (a, b): (Vec<&str>, Vec<&str>) = (
                shipped.split_inclusive('\n').collect(),
                loaded.split_inclusive('\n').collect(),
            );
            assert_eq!(a.len(), b.len());
            let changed: Vec<(&str, &str)> = a
                .iter()
                .zip(&b)
                .filter(|(x, y)| x != y)
                .map(|(x, y)| (*x, *y))
                .collect();
            assert_eq!(changed.len(), 3, "{changed:#?}");
            for (i, (was, now)) in changed.iter().enumerate() {
                let indent = &was[..was.len() - was.trim_start().len()];
                assert_eq!(
                    *was,
                    format!("{indent}secret = \"CHANGE-ME-wan{}\"\n", i + 1)
                );
                assert_eq!(*now, format!("{indent}secret = 0x{}\n", psks[i]));
            }
            assert!(!loaded.contains("CHANGE-ME"));
        }
    }

    /// A shipped file that lost a placeholder (or repeats one) is an error naming it, not a
    /// charon that fails to authenticate later.
    #[test]
    fn shipped_pair_without_its_placeholders_is_refused() {
        let psks = [String::new(), String::new(), String::new()];
        let missing = SHIPPED_BRANCH.replace("CHANGE-ME-wan3", "x");
        let e = shipped_swanctl(&missing, &psks).unwrap_err().to_string();
        assert!(e.contains("CHANGE-ME-wan3"), "{e}");
        let twice = format!("{SHIPPED_BRANCH}secret = \"CHANGE-ME-wan1\"\n");
        let e = shipped_swanctl(&twice, &psks).unwrap_err().to_string();
        assert!(e.contains("two") && e.contains("CHANGE-ME-wan1"), "{e}");
    }

    /// The shipped pair names its connections as [`connection`] does and marks each with its
    /// link's VTI key.
    #[test]
    fn shipped_pair_names_and_marks_each_link() {
        for shipped in [SHIPPED_BRANCH, SHIPPED_HEADOFFICE] {
            for l in 0..3 {
                let conn = connection(l);
                assert!(shipped.contains(&format!("    {conn} {{")), "{conn}");
                let key = vti_key(l);
                for m in ["mark_in", "mark_out"] {
                    assert!(shipped.contains(&format!("{m} = {key}\n")), "{m} = {key}");
                }
            }
        }
    }
}
