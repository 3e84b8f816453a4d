//! SAs and policies as the agent sees them: what it installs for a manually keyed link
//! ([`SaSpec`], [`PolicySpec`] → XFRM netlink messages) and what the kernel reports
//! ([`SaInfo`], parsed from dumps and events), and which of those belong to which link
//! ([`Direction::of`]).
//!
//! A link's SAs are the ESP tunnel-mode SAs between its underlay addresses that carry its
//! id: the xfrm mark (VTI key) or the if_id (xfrm interface). strongSwan leaves inbound SAs
//! unmarked by default (`mark_in_sa = no`; ip_vti finds them by SPI), so an unmarked
//! inbound SA between the right addresses counts for a VTI link.
//!
//! # What a reader may change
//!
//! Message building follows `ip xfrm state/policy add` (iproute2) field for field; the
//! unit tests pin the bytes that matter to the kernel (SPI order, mark, if_id, algorithm
//! names and key lengths in bits).

use std::net::IpAddr;

use netlink_packet_xfrm::{
    Address, Alg, AlgAead, AlgAuth, IPPROTO_ESP, Id, LifetimeConfig, Mark, Selector, UserPolicyId,
    UserPolicyInfo, UserSaId, UserSaInfo, UserTemplate, XFRM_MODE_TUNNEL, XFRM_POLICY_ALLOW,
    XFRM_POLICY_FWD, XFRM_POLICY_IN, XFRM_POLICY_OUT, XfrmAttrs, XfrmMessage,
    policy::{DelGetMessage as PolicyDelGet, ModifyMessage as PolicyModify},
    state::{DelGetMessage as StateDelGet, ModifyMessage as StateModify},
};

use super::keys::SaKeys;
use crate::config::{IpsecTunnel, SaAlgorithms, TunnelDevice};

const AF_INET: u16 = libc::AF_INET as u16;
const AF_INET6: u16 = libc::AF_INET6 as u16;
/// Replay window of manual SAs (packets), as strongSwan's default.
const REPLAY_WINDOW: u8 = 32;

fn family(a: &IpAddr) -> u16 {
    if a.is_ipv4() { AF_INET } else { AF_INET6 }
}

/// An address of `family` (AF_INET / AF_INET6) as an `IpAddr`.
pub(crate) fn address(family: u16, a: &Address) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(a.to_ipv4())),
        AF_INET6 => Some(IpAddr::V6(a.to_ipv6())),
        _ => None,
    }
}

fn unspecified(like: &IpAddr) -> IpAddr {
    if like.is_ipv4() {
        IpAddr::from([0u8; 4])
    } else {
        IpAddr::from([0u8; 16])
    }
}

/// Which way an SA or policy of a link carries traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// remote → local.
    In,
    /// local → remote.
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }

    /// The direction of `sa` on `link`, if it is one of the link's SAs.
    pub fn of(sa: &SaInfo, link: &IpsecTunnel) -> Option<Direction> {
        // SPI 0: a larval state the kernel holds while an acquire waits for an SA; an SPI
        // without a cipher: one an IKE daemon reserved for a CHILD_SA still being negotiated.
        // Neither is an SA yet.
        if sa.proto != IPPROTO_ESP || sa.spi == 0 || !sa.keyed {
            return None;
        }
        let dir = if sa.src == link.local && sa.dst == link.remote {
            Direction::Out
        } else if sa.src == link.remote && sa.dst == link.local {
            Direction::In
        } else {
            return None;
        };
        let ours = match link.device {
            TunnelDevice::Vti { key } => match sa.mark {
                Some((v, m)) => v & m == key.get() & m && m != 0,
                None => dir == Direction::In,
            },
            TunnelDevice::Xfrm { if_id } => sa.if_id == Some(if_id.get()),
        };
        ours.then_some(dir)
    }
}

/// The id attributes of a link's SAs and policies: mark or if_id.
fn link_id_attr(device: &TunnelDevice) -> XfrmAttrs {
    match device {
        TunnelDevice::Vti { key } => XfrmAttrs::Mark(Mark {
            value: key.get(),
            mask: u32::MAX,
        }),
        TunnelDevice::Xfrm { if_id } => XfrmAttrs::IfId(if_id.get()),
    }
}

/// One manual SA the agent installs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaSpec {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub spi: u32,
    pub reqid: u32,
    pub device: TunnelDevice,
    pub algorithms: SaAlgorithms,
    pub keys: SaKeys,
}

/// The reqid that ties a link's policies to its SAs: the link's mark / if_id.
pub fn reqid(link: &IpsecTunnel) -> u32 {
    link.device.id()
}

impl SaSpec {
    /// The link's SA in direction `dir`, keyed with `keys`.
    pub fn new(
        link: &IpsecTunnel,
        dir: Direction,
        spi: u32,
        algorithms: SaAlgorithms,
        keys: SaKeys,
    ) -> SaSpec {
        let (src, dst) = match dir {
            Direction::Out => (link.local, link.remote),
            Direction::In => (link.remote, link.local),
        };
        SaSpec {
            src,
            dst,
            spi,
            reqid: reqid(link),
            device: link.device,
            algorithms,
            keys,
        }
    }

    /// XFRM_MSG_NEWSA: an ESP tunnel-mode SA with no lifetime limits.
    pub fn add_message(&self) -> XfrmMessage {
        let mut selector = Selector::default();
        selector.source_prefix(&unspecified(&self.src), 0);
        selector.destination_prefix(&unspecified(&self.dst), 0);
        let info = UserSaInfo {
            selector,
            id: Id {
                daddr: Address::from_ip(&self.dst),
                spi: self.spi,
                proto: IPPROTO_ESP,
            },
            saddr: Address::from_ip(&self.src),
            lifetime_cfg: LifetimeConfig::default(),
            reqid: self.reqid,
            family: family(&self.dst),
            mode: XFRM_MODE_TUNNEL,
            replay_window: REPLAY_WINDOW,
            ..UserSaInfo::default()
        };
        let mut nlas = Vec::new();
        match self.algorithms {
            SaAlgorithms::Aead(a) => nlas.push(XfrmAttrs::EncryptionAlgAead(AlgAead {
                alg_name: name::<64>(a.kernel_name()),
                alg_key_len: bits(self.keys.enc.expose()),
                alg_icv_len: a.icv_bits(),
                alg_key: self.keys.enc.expose().to_vec(),
            })),
            SaAlgorithms::CipherAuth { cipher, auth } => {
                nlas.push(XfrmAttrs::EncryptionAlg(Alg {
                    alg_name: name::<64>(cipher.kernel_name()),
                    alg_key_len: bits(self.keys.enc.expose()),
                    alg_key: self.keys.enc.expose().to_vec(),
                }));
                let key = self.keys.auth.as_ref().map_or(&[][..], |k| k.expose());
                nlas.push(XfrmAttrs::AuthenticationAlgTrunc(AlgAuth {
                    alg_name: name::<64>(auth.kernel_name()),
                    alg_key_len: bits(key),
                    alg_trunc_len: auth.trunc_bits(),
                    alg_key: key.to_vec(),
                }));
            }
        }
        nlas.push(link_id_attr(&self.device));
        XfrmMessage::AddSa(StateModify {
            user_sa_info: info,
            nlas,
        })
    }

    /// Whether the kernel's SA (`info`, `nlas` from XFRM_MSG_GETSA) is this one: endpoints,
    /// mode, mark / if_id, algorithms and keys. Wipes the key bytes of `nlas` when done.
    pub fn same_as(&self, info: &UserSaInfo, mut nlas: Vec<XfrmAttrs>) -> bool {
        let XfrmMessage::AddSa(want) = self.add_message() else {
            unreachable!("add_message builds NEWSA")
        };
        let mut want_nlas = want.nlas;
        let keyed = |a: &XfrmAttrs| {
            matches!(
                a,
                XfrmAttrs::EncryptionAlgAead(_)
                    | XfrmAttrs::EncryptionAlg(_)
                    | XfrmAttrs::AuthenticationAlgTrunc(_)
                    | XfrmAttrs::Mark(_)
                    | XfrmAttrs::IfId(_)
            )
        };
        let same = address(info.family, &info.saddr) == Some(self.src)
            && info.mode == want.user_sa_info.mode
            && info.reqid == want.user_sa_info.reqid
            && want_nlas.iter().all(|w| nlas.contains(w))
            && nlas.iter().filter(|a| keyed(a)).count() == want_nlas.len();
        for a in nlas.iter_mut().chain(want_nlas.iter_mut()) {
            let key = match a {
                XfrmAttrs::EncryptionAlgAead(x) => &mut x.alg_key,
                XfrmAttrs::EncryptionAlg(x) => &mut x.alg_key,
                XfrmAttrs::AuthenticationAlgTrunc(x) => &mut x.alg_key,
                XfrmAttrs::AuthenticationAlg(x) => &mut x.alg_key,
                _ => continue,
            };
            for b in key.iter_mut() {
                // SAFETY: a valid &mut u8; volatile so the wipe is not optimised away.
                unsafe { std::ptr::write_volatile(b, 0) };
            }
        }
        same
    }

    /// XFRM_MSG_DELSA for this SA.
    pub fn del_message(&self) -> XfrmMessage {
        del_sa_message(self.src, self.dst, self.spi, &self.device)
    }
}

/// XFRM_MSG_DELSA for the ESP SA `spi` towards `dst` with the link's mark / if_id.
pub fn del_sa_message(src: IpAddr, dst: IpAddr, spi: u32, device: &TunnelDevice) -> XfrmMessage {
    let mut id = UserSaId::default();
    id.destination(&dst);
    id.spi = spi;
    id.proto = IPPROTO_ESP;
    XfrmMessage::DeleteSa(StateDelGet {
        user_sa_id: id,
        nlas: vec![
            XfrmAttrs::SrcAddr(Address::from_ip(&src)),
            link_id_attr(device),
        ],
    })
}

fn bits(key: &[u8]) -> u32 {
    (key.len() * 8) as u32
}

fn name<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    out[..s.len()].copy_from_slice(s.as_bytes());
    out
}

/// One policy of a link: any traffic (0.0.0.0/0 or ::/0 both ways) in direction `dir`, with
/// the link's mark or if_id, through an ESP tunnel between the underlay addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySpec {
    pub dir: u8,
    pub local: IpAddr,
    pub remote: IpAddr,
    pub reqid: u32,
    pub device: TunnelDevice,
}

impl PolicySpec {
    /// The link's out, in and fwd policies (fwd: routed traffic arriving through the tunnel).
    pub fn for_link(link: &IpsecTunnel) -> [PolicySpec; 3] {
        [XFRM_POLICY_OUT, XFRM_POLICY_IN, XFRM_POLICY_FWD].map(|dir| PolicySpec {
            dir,
            local: link.local,
            remote: link.remote,
            reqid: reqid(link),
            device: link.device,
        })
    }

    fn selector(&self) -> Selector {
        let any = unspecified(&self.local);
        let mut s = Selector::default();
        s.source_prefix(&any, 0);
        s.destination_prefix(&any, 0);
        s
    }

    /// XFRM_MSG_NEWPOLICY (or UPDPOLICY when `update`).
    pub fn add_message(&self, update: bool) -> XfrmMessage {
        let (src, dst) = if self.dir == XFRM_POLICY_OUT {
            (self.local, self.remote)
        } else {
            (self.remote, self.local)
        };
        let mut t = UserTemplate::default();
        t.source(&src);
        t.destination(&dst);
        t.protocol(IPPROTO_ESP);
        t.mode(XFRM_MODE_TUNNEL);
        t.reqid(self.reqid);
        // Any algorithm (as `ip xfrm policy … tmpl` leaves them).
        t.aalgos = u32::MAX;
        t.ealgos = u32::MAX;
        t.calgos = u32::MAX;
        let info = UserPolicyInfo {
            selector: self.selector(),
            direction: self.dir,
            action: XFRM_POLICY_ALLOW,
            ..UserPolicyInfo::default()
        };
        let msg = PolicyModify {
            user_policy_info: info,
            nlas: vec![XfrmAttrs::Template(vec![t]), link_id_attr(&self.device)],
        };
        if update {
            XfrmMessage::UpdatePolicy(msg)
        } else {
            XfrmMessage::AddPolicy(msg)
        }
    }

    /// XFRM_MSG_DELPOLICY by selector, direction and mark / if_id.
    pub fn del_message(&self) -> XfrmMessage {
        let id = UserPolicyId {
            selector: self.selector(),
            index: 0,
            direction: self.dir,
        };
        XfrmMessage::DeletePolicy(PolicyDelGet {
            user_policy_id: id,
            nlas: vec![link_id_attr(&self.device)],
        })
    }
}

/// An SA as the kernel reports it (no key material: it is dropped while parsing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaInfo {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub spi: u32,
    pub proto: u8,
    pub reqid: u32,
    /// (value, mask).
    pub mark: Option<(u32, u32)>,
    pub if_id: Option<u32>,
    /// As strongSwan names them: "aes128gcm16", "aes256-sha256"; else the kernel's names.
    pub algorithms: String,
    /// It has a cipher (AEAD or encryption algorithm). An IKE daemon reserves an inbound SPI
    /// (XFRM_MSG_ALLOCSPI) before it negotiates a CHILD_SA: the kernel then lists a larval
    /// state with that SPI and no algorithms, which carries no traffic.
    pub keyed: bool,
    pub bytes: u64,
    pub packets: u64,
    /// Unix seconds when it was added; 0 if unknown.
    pub add_time: u64,
    /// Hard lifetime in seconds after `add_time`; 0 = none.
    pub hard_lifetime: u64,
    pub replay_errors: u32,
    pub integrity_errors: u32,
}

impl SaInfo {
    /// From an SA message's header and attributes (dump, new, update, delete event).
    pub fn from_kernel(info: &UserSaInfo, nlas: &[XfrmAttrs]) -> Option<SaInfo> {
        let ip = |a: &Address| address(info.family, a);
        let mut mark = None;
        let mut if_id = None;
        let (mut aead, mut enc, mut auth) = (None, None, None);
        for a in nlas {
            match a {
                XfrmAttrs::Mark(m) => mark = Some((m.value, m.mask)),
                XfrmAttrs::IfId(i) => if_id = Some(*i),
                XfrmAttrs::EncryptionAlgAead(x) => {
                    aead = Some((cstr(&x.alg_name), x.alg_key_len, x.alg_icv_len))
                }
                XfrmAttrs::EncryptionAlg(x) => enc = Some((cstr(&x.alg_name), x.alg_key_len)),
                XfrmAttrs::AuthenticationAlgTrunc(x) => auth = Some(cstr(&x.alg_name)),
                XfrmAttrs::AuthenticationAlg(x) if auth.is_none() => auth = Some(cstr(&x.alg_name)),
                _ => {}
            }
        }
        let keyed = aead.is_some() || enc.is_some();
        let algorithms = algorithm_name(aead, enc, auth.as_deref());
        Some(SaInfo {
            src: ip(&info.saddr)?,
            dst: ip(&info.id.daddr)?,
            spi: info.id.spi,
            proto: info.id.proto,
            reqid: info.reqid,
            mark: mark.filter(|(v, m)| *v != 0 || *m != 0),
            if_id: if_id.filter(|i| *i != 0),
            algorithms,
            keyed,
            bytes: info.lifetime_cur.bytes,
            packets: info.lifetime_cur.packets,
            add_time: info.lifetime_cur.add_time,
            hard_lifetime: info.lifetime_cfg.hard_add_expires_seconds,
            replay_errors: info.stats.replay,
            integrity_errors: info.stats.integrity_failed,
        })
    }

    /// Seconds left before the hard lifetime ends, at `now_unix`; `None` without one.
    pub fn lifetime_left(&self, now_unix: u64) -> Option<u64> {
        (self.hard_lifetime > 0 && self.add_time > 0)
            .then(|| (self.add_time + self.hard_lifetime).saturating_sub(now_unix))
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn algorithm_name(
    aead: Option<(String, u32, u32)>,
    enc: Option<(String, u32)>,
    auth: Option<&str>,
) -> String {
    use crate::config::{Aead, Auth, Cipher};
    if let Some((n, key_bits, _)) = aead {
        let key = key_bits as usize / 8;
        return Aead::ALL
            .iter()
            .find(|(_, a)| a.kernel_name() == n && a.key_len() == key)
            .map_or(format!("{n}/{key_bits}"), |(s, _)| (*s).to_owned());
    }
    let enc = enc.map(|(n, key_bits)| {
        let key = key_bits as usize / 8;
        Cipher::ALL
            .iter()
            .find(|(_, c)| c.kernel_name() == n && c.key_len() == key)
            .map_or(format!("{n}/{key_bits}"), |(s, _)| (*s).to_owned())
    });
    let auth = auth.map(|n| {
        Auth::ALL
            .iter()
            .find(|(_, a)| a.kernel_name() == n)
            .map_or(n.to_owned(), |(s, _)| (*s).to_owned())
    });
    match (enc, auth) {
        (Some(e), Some(a)) => format!("{e}-{a}"),
        (Some(e), None) => e,
        (None, Some(a)) => a,
        (None, None) => "none".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Aead, Owner};
    use crate::xfrm::secret::Secret;
    use netlink_packet_core::{Emitable, ParseableParametrized};
    use std::num::NonZeroU32;

    fn vti(key: u32) -> IpsecTunnel {
        IpsecTunnel {
            device: TunnelDevice::Vti {
                key: NonZeroU32::new(key).unwrap(),
            },
            local: "192.0.2.1".parse().unwrap(),
            remote: "192.0.2.2".parse().unwrap(),
            owner: Owner::Xwan,
            manual_sa: None,
        }
    }

    fn keys(b: u8, n: usize) -> SaKeys {
        SaKeys {
            enc: Secret::new(vec![b; n]),
            auth: None,
        }
    }

    /// Emits and parses back, as the kernel would read the message.
    fn roundtrip(m: &XfrmMessage) -> XfrmMessage {
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        XfrmMessage::parse_with_param(&buf[..], m.message_type()).unwrap()
    }

    #[test]
    fn manual_aead_sa_message_matches_ip_xfrm() {
        let link = vti(101);
        let alg = SaAlgorithms::Aead(Aead::Aes128Gcm16);
        let sa = SaSpec::new(&link, Direction::Out, 0xa000_0001, alg, keys(7, 20));
        let XfrmMessage::AddSa(m) = roundtrip(&sa.add_message()) else {
            panic!("not NEWSA")
        };
        let i = &m.user_sa_info;
        assert_eq!(i.id.spi, 0xa000_0001);
        assert_eq!(i.id.proto, IPPROTO_ESP);
        assert_eq!(i.id.daddr.to_ipv4().to_string(), "192.0.2.2");
        assert_eq!(i.saddr.to_ipv4().to_string(), "192.0.2.1");
        assert_eq!(
            (i.mode, i.family, i.reqid),
            (XFRM_MODE_TUNNEL, AF_INET, 101)
        );
        let aead = m
            .nlas
            .iter()
            .find_map(|a| match a {
                XfrmAttrs::EncryptionAlgAead(x) => Some(x),
                _ => None,
            })
            .unwrap();
        assert_eq!(cstr(&aead.alg_name), "rfc4106(gcm(aes))");
        assert_eq!((aead.alg_key_len, aead.alg_icv_len), (160, 128));
        assert!(m.nlas.contains(&XfrmAttrs::Mark(Mark {
            value: 101,
            mask: u32::MAX
        })));
        // What the kernel reports back is matched to the link, without the key.
        let info = SaInfo::from_kernel(i, &m.nlas).unwrap();
        assert_eq!(info.algorithms, "aes128gcm16");
        assert_eq!(Direction::of(&info, &link), Some(Direction::Out));
        assert_eq!(Direction::of(&info, &vti(102)), None);
        assert!(!format!("{info:?}").contains("7, 7, 7"));
    }

    #[test]
    fn an_existing_sa_is_kept_only_with_the_same_keys() {
        let link = vti(101);
        let alg = SaAlgorithms::Aead(Aead::Aes128Gcm16);
        let sa = SaSpec::new(&link, Direction::Out, 0x1001, alg, keys(7, 20));
        let kernel = |k: u8| {
            let XfrmMessage::AddSa(m) = roundtrip(
                &SaSpec::new(&link, Direction::Out, 0x1001, alg, keys(k, 20)).add_message(),
            ) else {
                panic!()
            };
            m
        };
        let same = kernel(7);
        assert!(sa.same_as(&same.user_sa_info, same.nlas));
        let other = kernel(8);
        assert!(
            !sa.same_as(&other.user_sa_info, other.nlas),
            "new keys: replace it"
        );
        let mut unmarked = kernel(7);
        unmarked.nlas.retain(|a| !matches!(a, XfrmAttrs::Mark(_)));
        assert!(!sa.same_as(&unmarked.user_sa_info, unmarked.nlas));
    }

    #[test]
    fn cipher_auth_and_if_id() {
        use crate::config::{Auth, Cipher};
        let mut link = vti(1);
        link.device = TunnelDevice::Xfrm {
            if_id: NonZeroU32::new(42).unwrap(),
        };
        let alg = SaAlgorithms::CipherAuth {
            cipher: Cipher::Aes256Cbc,
            auth: Auth::Sha256,
        };
        let k = SaKeys {
            enc: Secret::new(vec![1; 32]),
            auth: Some(Secret::new(vec![2; 32])),
        };
        let sa = SaSpec::new(&link, Direction::In, 0xb000_0001, alg, k);
        let XfrmMessage::AddSa(m) = roundtrip(&sa.add_message()) else {
            panic!()
        };
        assert_eq!(m.user_sa_info.saddr.to_ipv4().to_string(), "192.0.2.2");
        assert!(m.nlas.contains(&XfrmAttrs::IfId(42)));
        let info = SaInfo::from_kernel(&m.user_sa_info, &m.nlas).unwrap();
        assert_eq!(info.algorithms, "aes256-sha256");
        assert_eq!(Direction::of(&info, &link), Some(Direction::In));
        let auth = m
            .nlas
            .iter()
            .find_map(|a| match a {
                XfrmAttrs::AuthenticationAlgTrunc(x) => Some(x),
                _ => None,
            })
            .unwrap();
        assert_eq!((auth.alg_key_len, auth.alg_trunc_len), (256, 128));
    }

    #[test]
    fn unmarked_inbound_sa_counts_for_a_vti() {
        let link = vti(101);
        let mut sa = SaInfo {
            src: link.remote,
            dst: link.local,
            spi: 1000,
            proto: IPPROTO_ESP,
            reqid: 1,
            mark: None,
            if_id: None,
            algorithms: "aes256gcm16".into(),
            keyed: true,
            bytes: 0,
            packets: 0,
            add_time: 100,
            hard_lifetime: 3600,
            replay_errors: 0,
            integrity_errors: 0,
        };
        assert_eq!(Direction::of(&sa, &link), Some(Direction::In));
        assert_eq!(sa.lifetime_left(1000), Some(2700));
        let larval = SaInfo {
            spi: 0,
            ..sa.clone()
        };
        assert_eq!(
            Direction::of(&larval, &link),
            None,
            "an acquire's larval state is no SA"
        );
        let reserved = SaInfo {
            algorithms: "none".into(),
            keyed: false,
            ..sa.clone()
        };
        assert_eq!(
            Direction::of(&reserved, &link),
            None,
            "an SPI reserved for a CHILD_SA being negotiated is no SA"
        );
        (sa.src, sa.dst) = (link.local, link.remote);
        assert_eq!(
            Direction::of(&sa, &link),
            None,
            "outbound SAs carry the mark"
        );
    }

    #[test]
    fn policies_carry_mark_template_and_direction() {
        let link = vti(103);
        let [out, inb, fwd] = PolicySpec::for_link(&link);
        let XfrmMessage::AddPolicy(m) = roundtrip(&out.add_message(false)) else {
            panic!()
        };
        assert_eq!(m.user_policy_info.direction, XFRM_POLICY_OUT);
        assert_eq!(m.user_policy_info.selector.prefixlen_d, 0);
        let tmpl = m
            .nlas
            .iter()
            .find_map(|a| match a {
                XfrmAttrs::Template(t) => Some(t[0]),
                _ => None,
            })
            .unwrap();
        assert_eq!(tmpl.saddr.to_ipv4().to_string(), "192.0.2.1");
        assert_eq!(tmpl.id.daddr.to_ipv4().to_string(), "192.0.2.2");
        assert_eq!((tmpl.reqid, tmpl.mode), (103, XFRM_MODE_TUNNEL));
        assert_eq!(inb.dir, XFRM_POLICY_IN);
        assert_eq!(fwd.dir, XFRM_POLICY_FWD);
        let XfrmMessage::DeletePolicy(d) = roundtrip(&fwd.del_message()) else {
            panic!()
        };
        assert_eq!(d.user_policy_id.direction, XFRM_POLICY_FWD);
        assert_eq!(
            d.nlas,
            vec![XfrmAttrs::Mark(Mark {
                value: 103,
                mask: u32::MAX
            })]
        );
    }
}
