//! Tunnel interfaces xwan owns (`kind = "vti"` / `"xfrm"`, `owner = "xwan"`): build the
//! RTM_NEWLINK message, create the interface or adopt an identical one, assign its address
//! and MTU, bring it up, and on `xwan stop` delete what xwan created.
//!
//! Ownership survives restarts in the interface alias: an interface xwan creates is given the
//! alias `xwan:<link name>`; one that existed before (alias unset or different) is adopted
//! when identical, used, and left in place on stop. An existing interface of the same name
//! that differs (kind, endpoints, key / if_id) is an error listing every difference: xwan never
//! rewrites an interface it did not create (one it created is recreated with the new values).
//!
//! # What a reader may change
//!
//! The alias prefix is how a later run recognises its own interfaces: changing it orphans
//! interfaces created by older versions.

use std::net::IpAddr;

use futures::TryStreamExt;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVti, InfoXfrm, LinkAttribute, LinkInfo, LinkMessage,
};
use rtnetlink::{LinkMessageBuilder, LinkUnspec};

use super::{Netlink, NetlinkError};
use crate::config::{InterfaceAddr, IpsecTunnel, TunnelDevice};

/// Alias prefix marking interfaces xwan created.
pub const ALIAS_PREFIX: &str = "xwan:";

/// The `IFLA_LINKINFO` of a tunnel interface: its kind and the kind's settings.
fn link_info(device: TunnelDevice, local: IpAddr, remote: IpAddr) -> LinkAttribute {
    let (kind, data) = match device {
        TunnelDevice::Vti { key } => (
            InfoKind::Vti,
            InfoData::Vti(vec![
                InfoVti::IKey(key.get()),
                InfoVti::OKey(key.get()),
                InfoVti::Local(local),
                InfoVti::Remote(remote),
            ]),
        ),
        TunnelDevice::Xfrm { if_id } => (
            InfoKind::Xfrm,
            InfoData::Xfrm(vec![InfoXfrm::IfId(if_id.get())]),
        ),
    };
    LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind), LinkInfo::Data(data)])
}

/// Whether this kernel can create interfaces of `device`'s kind (VTI: `ip_vti`, xfrm
/// interface: `xfrm_interface`, loaded on demand where they are modules). One is created in a
/// private network namespace of a thread of its own, which vanishes with the thread: nothing
/// is left anywhere. Needs root.
pub fn kernel_supports(device: TunnelDevice) -> Result<(), NetlinkError> {
    std::thread::spawn(move || -> Result<(), NetlinkError> {
        // SAFETY: plain syscall; only this thread moves to the new namespace.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let nl = Netlink::new()?;
            let (local, remote) = ([192, 0, 2, 1].into(), [192, 0, 2, 2].into());
            let msg = LinkMessageBuilder::<LinkUnspec>::new()
                .name("xwanprobe0".to_string())
                .append_extra_attribute(link_info(device, local, remote))
                .build();
            nl.handle
                .link()
                .add(msg)
                .execute()
                .await
                .map_err(|source| NetlinkError::Request {
                    what: "create a probe tunnel interface",
                    source,
                })
        })
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// What xwan wants an owned tunnel interface to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelSpec {
    /// The link's name (goes into the alias).
    pub link: String,
    pub interface: String,
    pub device: TunnelDevice,
    pub local: IpAddr,
    pub remote: IpAddr,
    pub address: InterfaceAddr,
    pub mtu: Option<u32>,
}

impl TunnelSpec {
    pub fn new(
        link: &str,
        interface: &str,
        t: &IpsecTunnel,
        address: InterfaceAddr,
        mtu: Option<u32>,
    ) -> TunnelSpec {
        TunnelSpec {
            link: link.to_owned(),
            interface: interface.to_owned(),
            device: t.device,
            local: t.local,
            remote: t.remote,
            address,
            mtu,
        }
    }

    pub fn alias(&self) -> String {
        format!("{ALIAS_PREFIX}{}", self.link)
    }

    /// RTM_NEWLINK as `ip link add NAME type vti local L remote R key K` (ikey = okey = K),
    /// or `type xfrm if_id N`; with the MTU and the ownership alias (which Linux ignores on
    /// creation: [`Netlink::ensure_tunnel`] sets it again right after).
    pub fn new_link_message(&self) -> LinkMessage {
        let mut b = LinkMessageBuilder::<LinkUnspec>::new()
            .name(self.interface.clone())
            .alias(self.alias())
            .append_extra_attribute(link_info(self.device, self.local, self.remote));
        if let Some(m) = self.mtu {
            b = b.mtu(m);
        }
        b.build()
    }

    /// How `existing` (an interface of the same name) differs from this spec; empty when it
    /// can be adopted. The MTU and address are not compared: xwan sets them.
    pub fn differences(&self, existing: &LinkMessage) -> Vec<String> {
        let mut kind = None;
        let mut vti: Vec<InfoVti> = vec![];
        let mut xfrm: Vec<InfoXfrm> = vec![];
        for a in &existing.attributes {
            if let LinkAttribute::LinkInfo(infos) = a {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => kind = Some(k.clone()),
                        LinkInfo::Data(InfoData::Vti(v)) => vti = v.clone(),
                        LinkInfo::Data(InfoData::Xfrm(x)) => xfrm = x.clone(),
                        _ => {}
                    }
                }
            }
        }
        let want = match self.device {
            TunnelDevice::Vti { .. } => InfoKind::Vti,
            TunnelDevice::Xfrm { .. } => InfoKind::Xfrm,
        };
        let shown = |k: &Option<InfoKind>| {
            k.as_ref()
                .map_or("a device without kind".to_owned(), |k| k.to_string())
        };
        if kind.as_ref() != Some(&want) {
            return vec![format!("it is {}, not {}", shown(&kind), want)];
        }
        let mut diffs = vec![];
        match self.device {
            TunnelDevice::Vti { key } => {
                let find = |f: fn(&InfoVti) -> Option<String>| vti.iter().find_map(f);
                let checks: [(&str, String, Option<String>); 4] = [
                    (
                        "local",
                        self.local.to_string(),
                        find(|v| match v {
                            InfoVti::Local(a) => Some(a.to_string()),
                            _ => None,
                        }),
                    ),
                    (
                        "remote",
                        self.remote.to_string(),
                        find(|v| match v {
                            InfoVti::Remote(a) => Some(a.to_string()),
                            _ => None,
                        }),
                    ),
                    (
                        "ikey",
                        key.to_string(),
                        find(|v| match v {
                            InfoVti::IKey(k) => Some(k.to_string()),
                            _ => None,
                        }),
                    ),
                    (
                        "okey",
                        key.to_string(),
                        find(|v| match v {
                            InfoVti::OKey(k) => Some(k.to_string()),
                            _ => None,
                        }),
                    ),
                ];
                for (what, want, have) in checks {
                    let have = have.unwrap_or_else(|| "unset".to_owned());
                    if have != want {
                        diffs.push(format!("{what} is {have}, not {want}"));
                    }
                }
            }
            TunnelDevice::Xfrm { if_id } => {
                let have = xfrm.iter().find_map(|x| match x {
                    InfoXfrm::IfId(i) => Some(*i),
                    _ => None,
                });
                if have != Some(if_id.get()) {
                    diffs.push(format!(
                        "if_id is {}, not {if_id}",
                        have.map_or("unset".to_owned(), |i| i.to_string())
                    ));
                }
            }
        }
        diffs
    }
}

fn alias_of(msg: &LinkMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfAlias(s) => Some(s.as_str()),
        _ => None,
    })
}

/// What [`Netlink::ensure_tunnel`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ensured {
    /// xwan created it now.
    Created,
    /// It existed, identical; `ours`: created by an earlier xwan run (alias), so `xwan stop`
    /// removes it.
    Adopted { ours: bool },
}

/// A tunnel interface could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error(
        "link '{link}': interface {interface} exists but differs: {}; delete it (ip link del \
         {interface}), rename the link's interface, or set owner = \"external\" to only use it",
        .differences.join(", ")
    )]
    Conflict {
        link: String,
        interface: String,
        differences: Vec<String>,
    },
    #[error("link '{link}': {what} {interface} failed: {error}{hint}")]
    Netlink {
        link: String,
        interface: String,
        what: &'static str,
        hint: &'static str,
        /// The kernel's answer (shown in the message, printed once).
        error: String,
    },
}

impl Netlink {
    /// The link message of the interface called `name`, if any.
    pub(super) async fn link_message(
        &self,
        name: &str,
    ) -> Result<Option<LinkMessage>, rtnetlink::Error> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(m) => Ok(m),
            // The kernel answers ENODEV for an unknown name.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENODEV => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the tunnel interface of `spec` or adopts an identical one; then sets its
    /// address, MTU and brings it up.
    pub async fn ensure_tunnel(&self, spec: &TunnelSpec) -> Result<Ensured, TunnelError> {
        let fail = |what: &'static str, hint: &'static str| {
            move |e: rtnetlink::Error| TunnelError::Netlink {
                link: spec.link.clone(),
                interface: spec.interface.clone(),
                what,
                hint,
                error: e.to_string(),
            }
        };
        let existing = self
            .link_message(&spec.interface)
            .await
            .map_err(fail("reading", ""))?;
        let existing = match existing {
            // xwan's own interface with other parameters (the configuration changed): recreate.
            Some(msg)
                if alias_of(&msg) == Some(spec.alias().as_str())
                    && !spec.differences(&msg).is_empty() =>
            {
                self.handle
                    .link()
                    .del(msg.header.index)
                    .execute()
                    .await
                    .map_err(fail("deleting the outdated", ""))?;
                None
            }
            other => other,
        };
        let ensured = match existing {
            Some(msg) => {
                let differences = spec.differences(&msg);
                if !differences.is_empty() {
                    return Err(TunnelError::Conflict {
                        link: spec.link.clone(),
                        interface: spec.interface.clone(),
                        differences,
                    });
                }
                Ensured::Adopted {
                    ours: alias_of(&msg) == Some(spec.alias().as_str()),
                }
            }
            None => {
                let hint = match spec.device {
                    TunnelDevice::Vti { .. } => "; does the kernel have ip_vti (modprobe ip_vti)?",
                    TunnelDevice::Xfrm { .. } => {
                        "; does the kernel have xfrm interfaces (modprobe xfrm_interface)?"
                    }
                };
                self.handle
                    .link()
                    .add(spec.new_link_message())
                    .execute()
                    .await
                    .map_err(fail("creating", hint))?;
                Ensured::Created
            }
        };
        let msg = self
            .link_message(&spec.interface)
            .await
            .map_err(fail("reading", ""))?
            .ok_or_else(|| TunnelError::Netlink {
                link: spec.link.clone(),
                interface: spec.interface.clone(),
                what: "finding",
                hint: "; it vanished right after being created",
                error: "no such device".to_owned(),
            })?;
        let index = msg.header.index;
        let mut set = LinkUnspec::new_with_index(index).up();
        if ensured == Ensured::Created {
            // Linux ignores IFLA_IFALIAS in a creating RTM_NEWLINK (seen on 6.1): without this
            // the interface would not be recognised as xwan's, and `xwan stop` would leave it.
            // Set before anything else can fail, so an error below still leaves it ours.
            set = set.alias(spec.alias());
        }
        if let Some(m) = spec.mtu {
            set = set.mtu(m);
        }
        self.handle
            .link()
            .set(set.build())
            .execute()
            .await
            .map_err(fail("bringing up", ""))?;
        let addr = spec.address;
        match self
            .handle
            .address()
            .add(index, addr.addr, addr.prefix_len)
            .execute()
            .await
        {
            Ok(()) => {}
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => {}
            Err(e) => return Err(fail("assigning the address to", "")(e)),
        }
        Ok(ensured)
    }

    /// Deletes `interface` if xwan created it for `link` (its alias says so). Returns whether
    /// it deleted it.
    pub async fn remove_tunnel(&self, link: &str, interface: &str) -> Result<bool, NetlinkError> {
        let Some(msg) = self
            .link_message(interface)
            .await
            .map_err(|e| NetlinkError::Request {
                what: "get link",
                source: e,
            })?
        else {
            return Ok(false);
        };
        if alias_of(&msg) != Some(format!("{ALIAS_PREFIX}{link}").as_str()) {
            return Ok(false);
        }
        self.handle
            .link()
            .del(msg.header.index)
            .execute()
            .await
            .map_err(|e| NetlinkError::Request {
                what: "delete link",
                source: e,
            })?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, Parseable};
    use std::num::NonZeroU32;

    fn spec(device: TunnelDevice) -> TunnelSpec {
        TunnelSpec {
            link: "TunWAN1".into(),
            interface: "vti1".into(),
            device,
            local: "192.0.2.1".parse().unwrap(),
            remote: "192.0.2.2".parse().unwrap(),
            address: InterfaceAddr {
                addr: "172.16.1.1".parse().unwrap(),
                prefix_len: 30,
            },
            mtu: Some(1400),
        }
    }

    fn vti(key: u32) -> TunnelDevice {
        TunnelDevice::Vti {
            key: NonZeroU32::new(key).unwrap(),
        }
    }

    /// Emits and parses back, as the kernel reads it.
    fn roundtrip(m: &LinkMessage) -> LinkMessage {
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        LinkMessage::parse(&buf[..]).unwrap()
    }

    #[test]
    fn vti_message_has_both_keys_endpoints_mtu_and_alias() {
        let m = roundtrip(&spec(vti(101)).new_link_message());
        assert!(m.attributes.contains(&LinkAttribute::IfName("vti1".into())));
        assert!(m.attributes.contains(&LinkAttribute::Mtu(1400)));
        assert_eq!(alias_of(&m), Some("xwan:TunWAN1"));
        let info = m
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::LinkInfo(i) => Some(i.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(info[0], LinkInfo::Kind(InfoKind::Vti));
        let LinkInfo::Data(InfoData::Vti(v)) = &info[1] else {
            panic!("{info:?}")
        };
        for want in [
            InfoVti::IKey(101),
            InfoVti::OKey(101),
            InfoVti::Local("192.0.2.1".parse().unwrap()),
            InfoVti::Remote("192.0.2.2".parse().unwrap()),
        ] {
            assert!(v.contains(&want), "{want:?} missing in {v:?}");
        }
        // An identical interface is adopted.
        assert!(spec(vti(101)).differences(&m).is_empty());
    }

    #[test]
    fn conflicts_say_what_differs() {
        let existing = roundtrip(&spec(vti(7)).new_link_message());
        let mut want = spec(vti(101));
        want.remote = "192.0.2.9".parse().unwrap();
        assert_eq!(
            want.differences(&existing),
            vec![
                "remote is 192.0.2.2, not 192.0.2.9",
                "ikey is 7, not 101",
                "okey is 7, not 101"
            ]
        );
        let xfrm = spec(TunnelDevice::Xfrm {
            if_id: NonZeroU32::new(5).unwrap(),
        });
        assert_eq!(xfrm.differences(&existing), vec!["it is vti, not xfrm"]);
        let m = roundtrip(&xfrm.new_link_message());
        assert!(xfrm.differences(&m).is_empty());
        let other = spec(TunnelDevice::Xfrm {
            if_id: NonZeroU32::new(6).unwrap(),
        });
        assert_eq!(other.differences(&m), vec!["if_id is 5, not 6"]);
        let e = TunnelError::Conflict {
            link: "TunWAN1".into(),
            interface: "vti1".into(),
            differences: want.differences(&existing),
        };
        assert_eq!(
            e.to_string(),
            "link 'TunWAN1': interface vti1 exists but differs: remote is 192.0.2.2, not \
             192.0.2.9, ikey is 7, not 101, okey is 7, not 101; delete it (ip link del vti1), \
             rename the link's interface, or set owner = \"external\" to only use it"
        );
    }
}
