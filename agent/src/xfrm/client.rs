//! XFRM netlink: blocking requests on a socket of their own ([`XfrmSocket`]: add/delete SAs
//! and policies, dump them) and the event stream ([`subscribe`]: new, updated, deleted and
//! expired SAs, acquires, policy changes). Everything works in the calling thread's network
//! namespace. Requests are small and answered at once, so the daemon and a metrics scrape
//! may block on them.

use std::{io, os::fd::AsRawFd, time::Duration};

use futures::channel::mpsc::UnboundedReceiver;
use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_xfrm::{
    XFRMNLGRP_ACQUIRE, XFRMNLGRP_EXPIRE, XFRMNLGRP_POLICY, XFRMNLGRP_SA, XfrmAttrs, XfrmMessage,
    policy::DelGetMessage as PolicyDelGet, state::GetDumpMessage,
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_XFRM};

use super::sa::SaInfo;

/// How long a request waits for the kernel's answer.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum XfrmError {
    #[error("XFRM netlink socket: {0}")]
    Io(#[from] io::Error),
    /// The kernel refused the request: errno (positive).
    #[error("the kernel refused it: {}", io::Error::from_raw_os_error(*.0))]
    Kernel(i32),
    #[error("XFRM netlink answer not understood: {0}")]
    Decode(String),
}

impl XfrmError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            XfrmError::Kernel(e) => Some(*e),
            _ => None,
        }
    }
}

/// A socket for XFRM requests.
pub struct XfrmSocket {
    socket: Socket,
    seq: u32,
}

impl XfrmSocket {
    pub fn open() -> Result<XfrmSocket, XfrmError> {
        let mut socket = Socket::new(NETLINK_XFRM)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let tv = libc::timeval {
            tv_sec: TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a valid timeval on a socket we own.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(XfrmSocket { socket, seq: 0 })
    }

    /// Sends `msg` and collects the answer: the messages of a dump, nothing for an ack.
    fn request(&mut self, msg: XfrmMessage, flags: u16) -> Result<Vec<XfrmMessage>, XfrmError> {
        self.seq = self.seq.wrapping_add(1);
        let mut nl = NetlinkMessage::from(msg);
        nl.header.flags = flags;
        nl.header.sequence_number = self.seq;
        nl.finalize();
        let mut buf = vec![0u8; nl.buffer_len()];
        nl.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        let mut rx = vec![0u8; 1 << 16];
        loop {
            let n = self.socket.recv(&mut &mut rx[..], 0)?;
            let mut off = 0;
            while off < n {
                let m = NetlinkMessage::<XfrmMessage>::deserialize(&rx[off..n])
                    .map_err(|e| XfrmError::Decode(e.to_string()))?;
                let len = m.header.length as usize;
                if len == 0 {
                    return Err(XfrmError::Decode("zero-length message".into()));
                }
                off += (len + 3) & !3;
                if m.header.sequence_number != self.seq {
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(c) => Err(XfrmError::Kernel(-c.get())),
                        };
                    }
                    NetlinkPayload::InnerMessage(i) => {
                        out.push(i);
                        if !dump {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Adds (NLM_F_CREATE | NLM_F_EXCL) or deletes something: waits for the ack.
    pub fn execute(&mut self, msg: XfrmMessage) -> Result<(), XfrmError> {
        let create = matches!(
            msg,
            XfrmMessage::AddSa(_) | XfrmMessage::AddPolicy(_) | XfrmMessage::UpdatePolicy(_)
        );
        let flags = NLM_F_REQUEST | NLM_F_ACK | if create { NLM_F_CREATE | NLM_F_EXCL } else { 0 };
        self.request(msg, flags).map(drop)
    }

    /// The SA `spi` towards `dst` with this mark (if any): its header and attributes, key
    /// material included (for [`super::sa::SaSpec::same_as`] only; never kept or shown).
    pub fn get_sa(
        &mut self,
        del_message: XfrmMessage,
    ) -> Result<Option<(netlink_packet_xfrm::UserSaInfo, Vec<XfrmAttrs>)>, XfrmError> {
        let XfrmMessage::DeleteSa(m) = del_message else {
            return Err(XfrmError::Decode("get_sa needs an SA id message".into()));
        };
        match self.request(XfrmMessage::GetSa(m), NLM_F_REQUEST) {
            Ok(msgs) => Ok(msgs.into_iter().find_map(|m| match m {
                XfrmMessage::AddSa(s) | XfrmMessage::UpdateSa(s) => Some((s.user_sa_info, s.nlas)),
                _ => None,
            })),
            Err(e) if e.errno() == Some(libc::ESRCH) || e.errno() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every SA of the namespace (keys are dropped while parsing).
    pub fn sas(&mut self) -> Result<Vec<SaInfo>, XfrmError> {
        let msgs = self.request(
            XfrmMessage::GetDumpSa(GetDumpMessage::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                XfrmMessage::AddSa(s) | XfrmMessage::UpdateSa(s) => {
                    SaInfo::from_kernel(&s.user_sa_info, &s.nlas)
                }
                _ => None,
            })
            .collect())
    }

    /// Every policy: (direction, mark or if_id value, the policy message's attributes).
    pub fn policies(&mut self) -> Result<Vec<PolicyInfo>, XfrmError> {
        let msgs = self.request(
            XfrmMessage::GetPolicy(PolicyDelGet::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                XfrmMessage::AddPolicy(p) | XfrmMessage::UpdatePolicy(p) => Some(PolicyInfo {
                    dir: p.user_policy_info.direction,
                    mark: p.nlas.iter().find_map(|a| match a {
                        XfrmAttrs::Mark(m) => Some(m.value),
                        _ => None,
                    }),
                    if_id: p.nlas.iter().find_map(|a| match a {
                        XfrmAttrs::IfId(i) => Some(*i),
                        _ => None,
                    }),
                    template: p.nlas.iter().find_map(|a| match a {
                        XfrmAttrs::Template(t) => t.first().map(|t| {
                            (
                                super::sa::address(t.family, &t.saddr),
                                super::sa::address(t.family, &t.id.daddr),
                            )
                        }),
                        _ => None,
                    }),
                }),
                _ => None,
            })
            .collect())
    }
}

/// A policy as far as the agent cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyInfo {
    pub dir: u8,
    pub mark: Option<u32>,
    pub if_id: Option<u32>,
    /// Tunnel endpoints of its first template (source, destination).
    pub template: Option<(Option<std::net::IpAddr>, Option<std::net::IpAddr>)>,
}

/// What the XFRM event stream reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XfrmEvent {
    /// An SA was added or updated.
    SaAdded(SaInfo),
    /// An SA is gone (deleted, or its hard lifetime ended).
    SaRemoved(SaInfo),
    /// An SA reached its soft lifetime: a rekey is due.
    SaSoftExpired(SaInfo),
    /// All SAs were flushed.
    SaFlushed,
    /// Traffic matched a policy with no SA (an IKE daemon should negotiate one).
    Acquire,
    /// A policy was added, updated, deleted or flushed.
    Policies,
}

/// Subscribes to SA, expire, acquire and policy events. Needs a tokio runtime.
pub fn subscribe() -> Result<UnboundedReceiver<XfrmEvent>, XfrmError> {
    let (conn, _handle, messages) = netlink_proto::new_connection::<XfrmMessage>(NETLINK_XFRM)?;
    let group = |g: u32| 1u32 << (g - 1);
    let groups = group(XFRMNLGRP_SA)
        | group(XFRMNLGRP_EXPIRE)
        | group(XFRMNLGRP_ACQUIRE)
        | group(XFRMNLGRP_POLICY);
    // Lost notifications need nothing here: the supervisor re-reads the SAs periodically.
    Ok(crate::netlink::notifications(
        conn, messages, groups, event, None,
    )?)
}

/// The event a kernel notification means, if any.
pub fn event(m: XfrmMessage) -> Option<XfrmEvent> {
    Some(match m {
        XfrmMessage::AddSa(s) | XfrmMessage::UpdateSa(s) => {
            XfrmEvent::SaAdded(SaInfo::from_kernel(&s.user_sa_info, &s.nlas)?)
        }
        // The deletion notice carries the whole SA as XFRMA_SA.
        XfrmMessage::DeleteSa(d) => {
            let info = d.nlas.iter().find_map(|a| match a {
                XfrmAttrs::SaInfo(i) => Some(i),
                _ => None,
            })?;
            XfrmEvent::SaRemoved(SaInfo::from_kernel(info, &d.nlas)?)
        }
        // (netlink-packet-xfrm 0.5 drops the expire notice's attributes: no mark here.)
        XfrmMessage::Expire(e) => {
            let info = SaInfo::from_kernel(&e.expire.state, &[])?;
            if e.expire.hard != 0 {
                XfrmEvent::SaRemoved(info)
            } else {
                XfrmEvent::SaSoftExpired(info)
            }
        }
        XfrmMessage::FlushSa(_) => XfrmEvent::SaFlushed,
        XfrmMessage::Acquire(_) => XfrmEvent::Acquire,
        XfrmMessage::AddPolicy(_)
        | XfrmMessage::UpdatePolicy(_)
        | XfrmMessage::DeletePolicy(_)
        | XfrmMessage::FlushPolicy(_)
        | XfrmMessage::PolicyExpire(_) => XfrmEvent::Policies,
        _ => return None,
    })
}
