//! Scrape-cost benchmark, kernel side: what reading the data plane's counters costs one
//! `/metrics` request (the encoding is timed by `metrics::bench_scrape`).

use std::time::Instant;

use aya::maps::{HashMap, Map, MapData};
use xwan_common::{FLOWS_MAP, FlowKey, FlowValue};

use super::{CounterReader, DatapathError};

/// Inserts synthetic flows `ids` (one distinct IPv4 5-tuple each) into the flow table pinned
/// under `pin_dir`: the benchmark's and the occupancy tests' fixture.
pub(crate) fn fill_flow_table(
    pin_dir: &std::path::Path,
    ids: std::ops::Range<u32>,
) -> Result<(), DatapathError> {
    let opened = |e| DatapathError::Map {
        map: FLOWS_MAP,
        op: "opening its pin".into(),
        error: Box::new(e),
    };
    let pin = MapData::from_pin(pin_dir.join(FLOWS_MAP)).map_err(opened)?;
    let mut table: HashMap<MapData, FlowKey, FlowValue> =
        HashMap::try_from(Map::from_map_data(pin).map_err(opened)?).map_err(opened)?;
    let value = FlowValue {
        last_seen_ns: 1,
        epoch: 1,
        rule: 0,
        router: 0,
        gateway: 0,
        flags: 0,
        _pad: [0; 2],
    };
    for i in ids {
        let key = FlowKey {
            src: [i, 0, 0, 0],
            dst: [0x0a00_0001, 0, 0, 0],
            sport: i as u16,
            dport: 443,
            proto: 6,
            family: 4,
            _pad: 0,
            ifindex: 1,
        };
        table
            .insert(key, value, 0)
            .map_err(|e| DatapathError::Map {
                map: FLOWS_MAP,
                op: format!("inserting benchmark flow {i}"),
                error: Box::new(e),
            })?;
    }
    Ok(())
}

/// Fills the flow table pinned under `pin_dir` with `flows` entries, then times
/// `iterations` reads of what a scrape reads through a [`CounterReader`]: `rules` rule
/// counters, `gateways` gateway counters, every reason and the flow-table occupancy.
/// Returns the median and the 99th percentile, in microseconds.
pub fn bench_counter_reads(
    pin_dir: &std::path::Path,
    rules: u16,
    gateways: u16,
    flows: u32,
    iterations: usize,
) -> Result<(f64, f64), DatapathError> {
    fill_flow_table(pin_dir, 0..flows)?;
    let reader = CounterReader::open(pin_dir)?;
    let mut us: Vec<f64> = Vec::with_capacity(iterations.max(1));
    for _ in 0..iterations.max(1) {
        let start = Instant::now();
        for slot in 0..rules {
            std::hint::black_box(reader.rule(slot)?);
        }
        for id in 0..gateways {
            std::hint::black_box(reader.gateway(id)?);
        }
        std::hint::black_box(reader.reasons()?);
        std::hint::black_box(reader.flow_count_now()?);
        us.push(start.elapsed().as_secs_f64() * 1e6);
    }
    us.sort_by(f64::total_cmp);
    let at = |q: f64| us[((q * us.len() as f64).ceil() as usize).clamp(1, us.len()) - 1];
    Ok((at(0.5), at(0.99)))
}
