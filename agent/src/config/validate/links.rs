//! `[[link]]` checks: each link with its IPsec fields (`vti` / `xfrm`, manual SAs), then
//! across links: one link per interface, one key / if_id per IPsec link.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;

use super::super::diag::{Kind, Object};
use super::super::model::*;
use super::super::raw::{self, Item, Str};
use super::{At, Validator, at, bad_ifname, family, v4_reserved, valid_ifname, valid_name};

impl Validator<'_, '_, '_> {
    // ---- [[link]] --------------------------------------------------------------------------

    pub(super) fn link(&mut self, item: &Item<raw::RawLink>) -> Option<Link> {
        let l = &item.value;
        let at = at(Kind::Link, item, l.name.as_ref());
        let o = &at.object;
        let mut ok = l.name.as_ref().is_some_and(|n| valid_name(n.get_ref()));

        let interface = self.required(&l.interface, &at, &item.span, "interface", "\"tun0\"");
        if let Some(i) = interface
            && !valid_ifname(i.get_ref())
        {
            self.err(&i.span(), o, Some("interface"), bad_ifname(i.get_ref()));
            ok = false;
        }
        #[derive(Clone, Copy, PartialEq)]
        enum K {
            Tunnel,
            Ethernet,
            Vti,
            Xfrm,
        }
        let kind = self
            .required(
                &l.kind,
                &at,
                &item.span,
                "kind",
                "\"tunnel\", \"ethernet\", \"vti\" or \"xfrm\"",
            )
            .and_then(|k| {
                let kinds = [
                    ("tunnel", K::Tunnel),
                    ("ethernet", K::Ethernet),
                    ("vti", K::Vti),
                    ("xfrm", K::Xfrm),
                ];
                self.choice(k, o, "kind", &kinds)
            });
        let address = match &l.address {
            None => Some(None),
            Some(a) => self.interface_addr(a, o).map(Some),
        };
        let mtu = match &l.mtu {
            None => Some(None),
            Some(m) => {
                let v6 = matches!(address, Some(Some(a)) if a.addr.is_ipv6());
                let lo = if v6 { 1280 } else { 68 };
                let hint = if v6 {
                    " (IPv6 needs at least 1280); remove mtu to use the interface's own"
                } else {
                    "; remove mtu to use the interface's own"
                };
                self.int(m, o, "mtu", (lo, 65535), hint)
                    .map(|v| Some(v as u32))
            }
        };
        let ipsec = match kind {
            Some(K::Vti) => self.ipsec(item, &at, false, address.flatten()).map(Some),
            Some(K::Xfrm) => self.ipsec(item, &at, true, address.flatten()).map(Some),
            Some(K::Tunnel | K::Ethernet) => {
                self.no_ipsec_fields(l, o);
                Some(None)
            }
            None => None,
        };
        if !ok {
            return None;
        }
        Some(Link {
            name: l.name.as_ref()?.get_ref().clone(),
            interface: interface?.get_ref().clone(),
            kind: match kind? {
                K::Ethernet => LinkKind::Ethernet,
                K::Tunnel | K::Vti | K::Xfrm => LinkKind::Tunnel,
            },
            address: address?,
            mtu: mtu?,
            ipsec: ipsec?,
        })
    }

    /// `local`, `remote`, `key` / `if_id`, `owner`, `manual_sa` of a `vti` / `xfrm` link.
    fn ipsec(
        &mut self,
        item: &Item<raw::RawLink>,
        at: &At,
        xfrm: bool,
        address: Option<InterfaceAddr>,
    ) -> Option<IpsecTunnel> {
        let l = &item.value;
        let o = &at.object;
        let kind = if xfrm { "xfrm" } else { "vti" };
        let mut ok = true;
        let underlay = |v: &mut Self, f: &Option<Str>, field: &str, example: &str| {
            let s = v.required(f, at, &item.span, field, example)?;
            match s.get_ref().trim().parse::<IpAddr>() {
                Ok(a) if a.is_unspecified() || a.is_multicast() => {
                    v.err(
                        &s.span(),
                        o,
                        Some(field),
                        format!("{a} cannot be a tunnel endpoint; use the unicast address of the underlay"),
                    );
                    None
                }
                Ok(a) => Some((a, s.span())),
                Err(_) => {
                    v.err(
                        &s.span(),
                        o,
                        Some(field),
                        format!(
                            "'{}' is not an IP address; write the underlay address, e.g. {example}",
                            s.get_ref()
                        ),
                    );
                    None
                }
            }
        };
        let local = underlay(self, &l.local, "local", "\"192.0.2.1\"");
        let remote = underlay(self, &l.remote, "remote", "\"192.0.2.2\"");
        if let (Some((la, _)), Some((ra, rs))) = (&local, &remote) {
            if la.is_ipv4() != ra.is_ipv4() {
                self.err(
                    rs,
                    o,
                    Some("remote"),
                    format!(
                        "{ra} is {} but local {la} is {}; both ends of the underlay must be of one family",
                        family(ra),
                        family(la)
                    ),
                );
                ok = false;
            } else if la == ra {
                self.err(
                    rs,
                    o,
                    Some("remote"),
                    format!(
                        "{ra} is also the local address; remote is the peer's underlay address"
                    ),
                );
                ok = false;
            }
        }
        if let Some((la, ls)) = &local
            && !xfrm
            && la.is_ipv6()
        {
            self.err(
                ls,
                o,
                Some("local"),
                format!(
                    "{la} is IPv6 but a vti link is IPv4 underlay only; use kind = \"xfrm\" for an IPv6 underlay"
                ),
            );
            ok = false;
        }
        // The id field of this kind is required; the other kind's is refused.
        let (id_field, other, other_field) = if xfrm {
            (&l.if_id, &l.key, "key")
        } else {
            (&l.key, &l.if_id, "if_id")
        };
        let id_name = if xfrm { "if_id" } else { "key" };
        if let Some(v) = other {
            self.err(
                &v.span(),
                o,
                Some(other_field),
                format!(
                    "{} {kind} link has no {other_field}; write {id_name} = {} instead",
                    if xfrm { "an" } else { "a" },
                    v.get_ref().0
                ),
            );
            ok = false;
        }
        let id = self
            .required(id_field, at, &item.span, id_name, "101")
            .and_then(|v| {
                self.int(
                    v,
                    o,
                    id_name,
                    (1, u32::MAX as i64),
                    "; it is the xfrm mark or if_id of the link's SAs and policies",
                )
            })
            .map(|v| NonZeroU32::new(v as u32).expect("range starts at 1"));
        let owner = self.keyword(&l.owner, o, "owner");
        if owner == Some(Owner::Xwan) && address.is_none() && l.address.is_none() {
            self.err(
                &item.span,
                o,
                Some("address"),
                format!(
                    "required field is missing; xwan creates this {kind} interface and assigns \
                     it the tunnel address: add address = \"172.16.1.1/30\" (or owner = \"external\")"
                ),
            );
            ok = false;
        }
        let manual_sa = match &l.manual_sa {
            None => Some(None),
            Some(m) => self.manual_sa(m, o).map(Some),
        };
        if !ok {
            return None;
        }
        let id = id?;
        Some(IpsecTunnel {
            device: if xfrm {
                TunnelDevice::Xfrm { if_id: id }
            } else {
                TunnelDevice::Vti { key: id }
            },
            local: local?.0,
            remote: remote?.0,
            owner: owner?,
            manual_sa: manual_sa?,
        })
    }

    fn manual_sa(&mut self, m: &toml::Spanned<raw::RawManualSa>, o: &Object) -> Option<ManualSa> {
        let span = m.span();
        let m = m.get_ref();
        let missing = |v: &mut Self, field: &str, example: &str| {
            v.err(
                &span,
                o,
                Some(&format!("manual_sa.{field}")),
                format!("required field is missing; add {field} = {example} to manual_sa"),
            );
        };
        let spi = |v: &mut Self, f: &Option<toml::Spanned<raw::Int>>, field: &str| {
            let Some(s) = f else {
                missing(v, field, "0x1001");
                return None;
            };
            v.int(
                s,
                o,
                &format!("manual_sa.{field}"),
                (256, u32::MAX as i64),
                " (SPIs 1 to 255 are reserved by RFC 4303)",
            )
            .map(|n| (n as u32, s.span()))
        };
        let spi_in = spi(self, &m.spi_in, "spi_in");
        let spi_out = spi(self, &m.spi_out, "spi_out");
        let mut ok = true;
        if let (Some((a, _)), Some((b, bs))) = (&spi_in, &spi_out)
            && a == b
        {
            self.err(
                bs,
                o,
                Some("manual_sa.spi_out"),
                format!("{b:#x} is also spi_in; each direction needs its own SPI"),
            );
            ok = false;
        }
        let algorithms = match (&m.aead, &m.cipher, &m.auth) {
            (Some(a), None, None) => self
                .choice(a, o, "manual_sa.aead", &Aead::ALL)
                .map(SaAlgorithms::Aead),
            (None, Some(c), Some(h)) => {
                let cipher = self.choice(c, o, "manual_sa.cipher", &Cipher::ALL);
                let auth = self.choice(h, o, "manual_sa.auth", &Auth::ALL);
                Some(SaAlgorithms::CipherAuth {
                    cipher: cipher?,
                    auth: auth?,
                })
            }
            (Some(_), Some(c), _) | (Some(_), None, Some(c)) => {
                self.err(
                    &c.span(),
                    o,
                    Some("manual_sa.aead"),
                    "aead and cipher/auth exclude each other; keep aead = \"aes128gcm16\" alone, \
                     or cipher and auth without aead"
                        .to_owned(),
                );
                None
            }
            (None, Some(_), None) => {
                missing(self, "auth", "\"sha256\"");
                None
            }
            (None, None, Some(_)) => {
                missing(self, "cipher", "\"aes128\"");
                None
            }
            (None, None, None) => {
                missing(self, "aead", "\"aes128gcm16\" (or cipher and auth)");
                None
            }
        };
        let key_file = match &m.key_file {
            None => {
                missing(self, "key_file", "\"/etc/xwan/keys/LINK.keys\"");
                None
            }
            Some(k) => {
                let p = PathBuf::from(k.get_ref());
                if p.is_absolute() {
                    Some(p)
                } else {
                    self.err(
                        &k.span(),
                        o,
                        Some("manual_sa.key_file"),
                        format!(
                            "'{}' is a relative path; write the absolute path of the key file",
                            k.get_ref()
                        ),
                    );
                    None
                }
            }
        };
        if !ok {
            return None;
        }
        Some(ManualSa {
            spi_in: spi_in?.0,
            spi_out: spi_out?.0,
            algorithms: algorithms?,
            key_file: key_file?,
        })
    }

    /// `local`, `remote`, … on a link that is not `vti` / `xfrm`.
    fn no_ipsec_fields(&mut self, l: &raw::RawLink, o: &Object) {
        let spans = [
            ("local", l.local.as_ref().map(|v| v.span())),
            ("remote", l.remote.as_ref().map(|v| v.span())),
            ("key", l.key.as_ref().map(|v| v.span())),
            ("if_id", l.if_id.as_ref().map(|v| v.span())),
            ("owner", l.owner.as_ref().map(|v| v.span())),
            ("manual_sa", l.manual_sa.as_ref().map(|v| v.span())),
        ];
        for (field, span) in spans {
            if let Some(span) = span {
                self.err(
                    &span,
                    o,
                    Some(field),
                    format!(
                        "only IPsec tunnel links have {field}; set kind = \"vti\" or \"xfrm\", \
                         or remove it"
                    ),
                );
            }
        }
    }

    /// Two IPsec links with the same key / if_id: their SAs and policies would be shared.
    pub(super) fn tunnel_ids(&mut self, links: &[Option<Link>]) {
        let mut seen: HashMap<u32, &str> = HashMap::new();
        for (item, link) in self.doc.links.iter().zip(links) {
            let Some(Link {
                name,
                ipsec: Some(t),
                ..
            }) = link
            else {
                continue;
            };
            let id = t.device.id();
            let field = if matches!(t.device, TunnelDevice::Vti { .. }) {
                ("key", item.value.key.as_ref())
            } else {
                ("if_id", item.value.if_id.as_ref())
            };
            if let Some(first) = seen.get(&id) {
                let o = at(Kind::Link, item, item.value.name.as_ref()).object;
                let span = field.1.map_or(item.span.clone(), |v| v.span());
                self.err(
                    &span,
                    &o,
                    Some(field.0),
                    format!(
                        "{id} is already the key or if_id of link '{first}'; each IPsec link \
                         needs its own (it selects the link's SAs and policies)"
                    ),
                );
            } else {
                seen.insert(id, name);
            }
        }
    }

    fn interface_addr(&mut self, a: &Str, o: &Object) -> Option<InterfaceAddr> {
        let s = a.get_ref().trim();
        let err = |v: &mut Self, msg: String| {
            v.err(&a.span(), o, Some("address"), msg);
            None
        };
        let Some((addr, len)) = s.split_once('/') else {
            return match s.parse::<IpAddr>() {
                Ok(_) => err(
                    self,
                    format!(
                        "'{s}' has no prefix length; write the address with its prefix, \
                         e.g. \"{s}/30\""
                    ),
                ),
                Err(_) => err(
                    self,
                    format!("'{s}' is not an address with a prefix; write e.g. \"172.16.1.1/30\""),
                ),
            };
        };
        let (Ok(addr), Ok(len)) = (addr.parse::<IpAddr>(), len.parse::<u8>()) else {
            return err(
                self,
                format!("'{s}' is not an address with a prefix; write e.g. \"172.16.1.1/30\""),
            );
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return err(
                self,
                format!("prefix length /{len} is longer than /{max}; use /0 to /{max}"),
            );
        }
        let ia = InterfaceAddr {
            addr,
            prefix_len: len,
        };
        if let Some(which) = v4_reserved(&ia.network(), addr) {
            return err(
                self,
                format!(
                    "{addr} is the {which} address of {}; use a host address of the subnet",
                    ia.network()
                ),
            );
        }
        Some(ia)
    }

    /// Two links on one interface.
    pub(super) fn link_interfaces(&mut self) {
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for item in &self.doc.links {
            let l = &item.value;
            let (Some(i), Some(n)) = (&l.interface, &l.name) else {
                continue;
            };
            if let Some(first) = seen.get(i.get_ref().as_str()) {
                let msg = format!(
                    "interface '{}' is already used by link '{first}'; a link is one interface: \
                     put the gateways of both on link '{first}'",
                    i.get_ref()
                );
                let o = at(Kind::Link, item, l.name.as_ref()).object;
                self.err(&i.span(), &o, Some("interface"), msg);
            } else {
                seen.insert(i.get_ref(), n.get_ref());
            }
        }
    }
}
