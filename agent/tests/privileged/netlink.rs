//! rtnetlink reads and events in a private network namespace: carrier loss on a veth is
//! seen as an event (the agent marks gateways Unavailable on it), TUN devices read as L3,
//! neighbour MACs and addresses are found.
//!
//! Needs root. The namespace is removed even when the test fails.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::support::{
    self,
    netns::{Netns, tun},
};
use futures::StreamExt;
use xwan::netlink::{Event, Netlink, subscribe};

const WAIT: Duration = Duration::from_secs(3);

#[test]
fn interfaces_neighbours_addresses_and_carrier_events() {
    let _turn = support::exclusive();
    let ns = Netns::new("nl");
    ns.ip(&["link", "add", "a0", "type", "veth", "peer", "name", "b0"]);
    ns.ip(&["addr", "add", "10.9.0.1/24", "dev", "a0"]);
    ns.ip(&["link", "set", "a0", "up"]);
    let _tun = ns.run(|| tun("t0"));

    ns.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let nl = Netlink::new().unwrap();
            let a0 = nl.interface("a0").await.unwrap().expect("a0 exists");
            assert!(a0.l2 && a0.mac.is_some() && a0.mtu == 1500);
            assert!(a0.admin_up && !a0.carrier, "a veth has no carrier while its peer is down");
            let t0 = nl.interface("t0").await.unwrap().expect("t0 exists");
            assert!(!t0.l2 && t0.mac.is_none(), "a TUN device is an L3 device: {t0:?}");
            assert_eq!(nl.interface("nope0").await.unwrap(), None);

            let addrs = nl.addresses().await.unwrap();
            assert!(addrs.contains(&(a0.ifindex, "10.9.0.1".parse().unwrap(), 24)), "{addrs:?}");

            let mut events = subscribe().unwrap();
            let carrier = |up: bool| move |e: &Event| matches!(e, Event::Link(i) if i.name == "a0" && i.carrier == up);

            let t = Instant::now();
            ns.ip(&["link", "set", "b0", "up"]);
            wait(&mut events, carrier(true)).await.expect("carrier-up event for a0");
            let t = Instant::now().max(t);
            ns.ip(&["link", "set", "b0", "down"]);
            wait(&mut events, carrier(false)).await.expect("carrier-loss event for a0");
            println!("carrier loss seen {:?} after `ip link set down`", t.elapsed());

            let peer: IpAddr = "10.9.0.2".parse().unwrap();
            ns.ip(&["neigh", "add", "10.9.0.2", "lladdr", "02:00:00:00:00:05", "dev", "a0", "nud", "permanent"]);
            let mac = Some([2, 0, 0, 0, 0, 5]);
            let ev = wait(&mut events, |e| matches!(e, Event::Neighbour { ip, .. } if *ip == peer)).await;
            assert_eq!(ev, Some(Event::Neighbour { ifindex: a0.ifindex, ip: peer, mac }));
            assert_eq!(nl.neighbour(a0.ifindex, peer).await.unwrap(), mac);
            assert_eq!(nl.neighbour(a0.ifindex, "10.9.0.3".parse().unwrap()).await.unwrap(), None);
        });
    });
}

async fn wait(
    events: &mut futures::channel::mpsc::UnboundedReceiver<Event>,
    want: impl Fn(&Event) -> bool,
) -> Option<Event> {
    tokio::time::timeout(WAIT, async {
        while let Some(e) = events.next().await {
            if want(&e) {
                return Some(e);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}
