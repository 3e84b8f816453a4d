//! Failover under load (xwan only: kernel policy routing has no health checks to fail over
//! with). At the equal-load rate (`equal_rate` in `mod.rs`), link 2 (SQL's) is cut, either
//! *silently* (its sink drops everything and answers no probe, carrier stays up) or *by
//! carrier* (the sink veth goes down, so the router's link loses carrier). The harness polls
//! the sinks every millisecond and reports how long until SQL packets arrive on the backup
//! link (3) and how many packets were lost between the cut and then.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aya::{Ebpf, maps::Array};
use serde::Serialize;

use super::{
    Settings, measure,
    modes::{self, Mode},
    source::Generator,
    topology::{Links, Topology},
    traffic::{self, CLASSES, Mix},
};

#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Cut {
    Silent,
    Carrier,
}

#[derive(Clone, Debug, Serialize)]
pub struct Failover {
    pub cut: Cut,
    pub rules: usize,
    pub offered_mpps: f64,
    /// From the cut to the first SQL packet on the backup link.
    pub moved_after_ms: f64,
    /// Packets sent minus packets received from the cut until the moved flows flowed again.
    pub lost_packets: u64,
    /// The share of all packets sent in that interval that were lost.
    pub lost_share: f64,
}

const CUT_LINK: usize = 1; // link 2, 0-based
const BACKUP_LINK: usize = 2; // link 3: R2's backup gateway G3

fn set_dead(tools: &mut Ebpf, ifindex: u32, dead: bool) -> Result<()> {
    let mut m: Array<_, u32> =
        Array::try_from(tools.map_mut("LOAD_SINK_DEAD").context("LOAD_SINK_DEAD")?)?;
    m.set(ifindex & 63, dead as u32, 0)?;
    Ok(())
}

/// Packets received on every sink, and SQL packets on the backup link.
fn poll(tools: &Ebpf, topo: &Topology) -> Result<(u64, u64)> {
    let mut total = 0;
    let mut sql_on_backup = 0;
    for (l, ifindex) in topo.sink_ifindex.iter().enumerate() {
        let r = traffic::received(tools, *ifindex)?;
        total += r.iter().sum::<u64>();
        if l == BACKUP_LINK {
            sql_on_backup += CLASSES
                .iter()
                .filter(|c| c.link == CUT_LINK)
                .map(|c| r[c.id as usize])
                .sum::<u64>();
        }
    }
    Ok((total, sql_on_backup))
}

#[allow(clippy::too_many_arguments)]
pub fn run(
    cut: Cut,
    rules: usize,
    pps: f64,
    topo: &Topology,
    tools: &mut Ebpf,
    settings: &Settings,
    xwan_bin: &std::path::Path,
    work: &std::path::Path,
) -> Result<Failover> {
    traffic::set_rate(tools, settings.flows, settings.train, (1e9 / pps) as u64)?;
    let active = modes::setup(
        Mode::Xwan,
        rules,
        Links::Veth,
        topo,
        tools,
        xwan_bin,
        work,
        settings.realtime,
        settings.flows,
    )?;
    let result = (|| {
        measure::place_threads(topo, settings)?;
        let mut source = Generator::start(
            settings.source,
            tools,
            topo,
            Mix::Small,
            settings.source_cpu,
            settings.realtime,
        )?;
        std::thread::sleep(Duration::from_secs(1));
        let (_, sql0) = poll(tools, topo)?;
        let sent0 = traffic::sent(tools)?;
        let (recv0, _) = poll(tools, topo)?;
        let cut_at = Instant::now();
        match cut {
            Cut::Silent => set_dead(tools, topo.sink_ifindex[CUT_LINK], true)?,
            Cut::Carrier => topo
                .sink
                .ip(&["link", "set", &topo.sink_devs[CUT_LINK], "down"])?,
        }
        let mut moved = None;
        while cut_at.elapsed() < Duration::from_secs(15) {
            let (_, sql) = poll(tools, topo)?;
            if sql > sql0 {
                moved = Some(cut_at.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let sent1 = traffic::sent(tools)?;
        let (recv1, _) = poll(tools, topo)?;
        source.finish()?;
        let Some(moved) = moved else {
            bail!("{cut:?} cut of link 2: SQL traffic did not reach the backup link within 15 s");
        };
        let sent = sent1 - sent0;
        let lost = sent.saturating_sub(recv1 - recv0);
        Ok(Failover {
            cut,
            rules,
            offered_mpps: pps / 1e6,
            moved_after_ms: moved.as_secs_f64() * 1e3,
            lost_packets: lost,
            lost_share: lost as f64 / sent.max(1) as f64,
        })
    })();
    // Heal the link before the agent goes, whatever happened.
    let _ = set_dead(tools, topo.sink_ifindex[CUT_LINK], false);
    let _ = topo
        .sink
        .ip(&["link", "set", &topo.sink_devs[CUT_LINK], "up"]);
    modes::teardown(Mode::Xwan, active, topo, tools)?;
    traffic::set_rate(tools, settings.flows, settings.train, 0)?;
    result
}
