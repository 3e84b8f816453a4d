//! Reading the per-CPU counters (summed over CPUs) and the flow tables' occupancy.

use aya::maps::{HashMap, MapData, PerCpuArray};
use std::collections::HashMap as StdHashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use xwan_common::{
    Counter, FLOW_SIZED_MAPS, FLOWS_MAP, FlowKey, FlowValue, GATEWAY_COUNTERS_MAP,
    GATEWAY_FAILURES_MAP, NEW_FLOWS_MAP, REASON_COUNTERS_MAP, RETURN_MAP, RULE_COUNTERS_MAP,
    ReturnValue, reason,
};

use super::{Datapath, DatapathError, sys};

/// One reason counter with its metric label.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ReasonCounter {
    /// `xwan_common::reason::*` code.
    pub code: u32,
    /// Label from `xwan_common::reason::NAMES`.
    pub name: &'static str,
    pub counter: Counter,
}

/// The sum of one entry's per-CPU values.
fn sum(v: &[Counter]) -> Counter {
    v.iter().fold(Counter::default(), |a, c| Counter {
        packets: a.packets.wrapping_add(c.packets),
        bytes: a.bytes.wrapping_add(c.bytes),
    })
}

/// A map error on `map` while doing `op`.
fn map_error(map: &'static str, op: String) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    move |error| DatapathError::Map {
        map,
        op,
        error: Box::new(error),
    }
}

/// Entries in the flow-keyed hash map `data` with values of type `V`: counted in batches of
/// [`sys::map_count`], bounded by the table's size. A snapshot: the data plane inserts and
/// evicts during the walk.
fn count_flows<V>(data: &MapData, name: &'static str) -> Result<usize, DatapathError> {
    use std::os::fd::AsFd;
    let capacity = data
        .info()
        .map_err(map_error(name, "reading map info".into()))?
        .max_entries();
    sys::map_count(
        data.fd().as_fd(),
        std::mem::size_of::<FlowKey>(),
        std::mem::size_of::<V>(),
        capacity as usize,
    )
    .map_err(|io_error| {
        map_error(name, "counting entries (BPF_MAP_LOOKUP_BATCH)".into())(
            aya::sys::SyscallError {
                call: "bpf_map_lookup_batch",
                io_error,
            }
            .into(),
        )
    })
}

/// Entry `index` of a per-CPU counter array, summed over CPUs.
fn entry_sum<M: std::borrow::Borrow<MapData>>(
    m: &PerCpuArray<M, Counter>,
    name: &'static str,
    index: u32,
) -> Result<Counter, DatapathError> {
    let v = m
        .get(&index, 0)
        .map_err(map_error(name, format!("reading entry {index}")))?;
    Ok(sum(&v))
}

impl Datapath {
    fn percpu(&self, name: &'static str) -> Result<PerCpuArray<&MapData, Counter>, DatapathError> {
        PerCpuArray::try_from(self.map(name)?).map_err(map_error(name, "opening".into()))
    }

    fn percpu_sums(&self, name: &'static str) -> Result<Vec<Counter>, DatapathError> {
        let m = self.percpu(name)?;
        (0..m.len()).map(|i| entry_sum(&m, name, i)).collect()
    }

    fn percpu_sum(&self, name: &'static str, index: u32) -> Result<Counter, DatapathError> {
        entry_sum(&self.percpu(name)?, name, index)
    }

    fn map_data(&self, name: &'static str) -> Result<&MapData, DatapathError> {
        super::loader::map_data(self.map(name)?).ok_or(DatapathError::Missing {
            what: "hash map",
            name: name.into(),
        })
    }

    /// A flow-keyed hash map (the flow table or the return-route table).
    fn flow_map<V: aya::Pod>(
        &self,
        name: &'static str,
    ) -> Result<HashMap<&MapData, FlowKey, V>, DatapathError> {
        HashMap::try_from(self.map(name)?).map_err(map_error(name, "opening".into()))
    }

    /// One reason counter (`xwan_common::reason::*` code), summed over CPUs.
    pub fn reason_counter(&self, code: u32) -> Result<Counter, DatapathError> {
        self.percpu_sum(REASON_COUNTERS_MAP, code)
    }

    /// One rule counter slot, summed over CPUs.
    pub fn rule_counter(&self, slot: u16) -> Result<Counter, DatapathError> {
        self.percpu_sum(RULE_COUNTERS_MAP, slot as u32)
    }

    /// One gateway's counter, summed over CPUs.
    pub fn gateway_counter(&self, id: u16) -> Result<Counter, DatapathError> {
        self.percpu_sum(GATEWAY_COUNTERS_MAP, id as u32)
    }

    /// Packets and bytes per rule counter slot (`Rule::counter`), `MAX_RULE_COUNTERS` entries.
    pub fn rule_counters(&self) -> Result<Vec<Counter>, DatapathError> {
        self.percpu_sums(RULE_COUNTERS_MAP)
    }

    /// Packets and bytes forwarded per gateway id, `MAX_GATEWAYS` entries.
    pub fn gateway_counters(&self) -> Result<Vec<Counter>, DatapathError> {
        self.percpu_sums(GATEWAY_COUNTERS_MAP)
    }

    /// New flows per gateway id (`packets`; see `xwan_common::NEW_FLOWS_MAP`),
    /// `MAX_GATEWAYS` entries.
    pub fn new_flow_counters(&self) -> Result<Vec<Counter>, DatapathError> {
        self.percpu_sums(NEW_FLOWS_MAP)
    }

    /// The new flows of gateways `0..gateways` only (a read per gateway: the configured ones,
    /// not the map's 4,096).
    pub fn new_flow_counts(&self, gateways: usize) -> Result<Vec<u64>, DatapathError> {
        (0..gateways as u32)
            .map(|id| Ok(self.percpu_sum(NEW_FLOWS_MAP, id)?.packets))
            .collect()
    }

    /// Packets and bytes steered per gateway id that its egress did not take,
    /// `MAX_GATEWAYS` entries (see `xwan_common::EgressLog`).
    pub fn gateway_failures(&self) -> Result<Vec<Counter>, DatapathError> {
        self.percpu_sums(GATEWAY_FAILURES_MAP)
    }

    /// Packets and bytes per verdict reason, indexed by reason code (`reason::COUNT` entries;
    /// labels in `xwan_common::reason::NAMES`).
    pub fn reason_counters(&self) -> Result<Vec<Counter>, DatapathError> {
        self.percpu_sums(REASON_COUNTERS_MAP)
    }

    /// [`Self::reason_counters`] with their codes and labels.
    pub fn named_reason_counters(&self) -> Result<Vec<ReasonCounter>, DatapathError> {
        Ok(self
            .reason_counters()?
            .into_iter()
            .enumerate()
            .take(reason::COUNT as usize)
            .map(|(i, counter)| ReasonCounter {
                code: i as u32,
                name: reason::NAMES[i],
                counter,
            })
            .collect())
    }

    /// Entries in the flow table (a snapshot, see [`count_flows`]).
    pub fn flow_count(&self) -> Result<usize, DatapathError> {
        count_flows::<FlowValue>(self.map_data(FLOWS_MAP)?, FLOWS_MAP)
    }

    /// Entries in the return-route table (a snapshot, see [`count_flows`]).
    pub fn return_count(&self) -> Result<usize, DatapathError> {
        count_flows::<ReturnValue>(self.map_data(RETURN_MAP)?, RETURN_MAP)
    }

    /// The flow table's entries (bounded by its size; tests and `xwan explain`).
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowValue)>, DatapathError> {
        let m = self.flow_map(FLOWS_MAP)?;
        Ok(m.iter()
            .take(self.flow_table as usize)
            .filter_map(Result::ok)
            .collect())
    }

    /// The flow table's entry for `key`, if any (`xwan explain`).
    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowValue>, DatapathError> {
        self.entry(FLOWS_MAP, key)
    }

    /// The return-route table's entry for `key`, if any (`xwan explain`).
    pub fn return_entry(&self, key: &FlowKey) -> Result<Option<ReturnValue>, DatapathError> {
        self.entry(RETURN_MAP, key)
    }

    fn entry<V: aya::Pod>(
        &self,
        name: &'static str,
        key: &FlowKey,
    ) -> Result<Option<V>, DatapathError> {
        match self.flow_map::<V>(name)?.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_error(name, "reading".into())(e)),
        }
    }

    /// The return-route table's entries (bounded by its size).
    pub fn returns(&self) -> Result<Vec<(FlowKey, ReturnValue)>, DatapathError> {
        let m = self.flow_map(RETURN_MAP)?;
        Ok(m.iter()
            .take(self.flow_table as usize)
            .filter_map(Result::ok)
            .collect())
    }
}

/// Reads the counters through the pinned maps, with file descriptors of its own: a metrics
/// scrape on another thread never waits for the agent's [`Datapath`] (or holds it up).
///
/// What it returns never decreases: the egress programs take a failed redirect back out of
/// its `steer_*` reason and gateway counter (`xwan_common::EgressLog`), so a read between the
/// redirect and the driver's verdict can be ahead by the frames in flight. The next reads
/// repeat the highest value seen until the kernel's count passes it; a Prometheus counter
/// must not go down.
pub struct CounterReader {
    rules: PerCpuArray<MapData, Counter>,
    gateways: PerCpuArray<MapData, Counter>,
    failures: PerCpuArray<MapData, Counter>,
    new_flows: PerCpuArray<MapData, Counter>,
    reasons: PerCpuArray<MapData, Counter>,
    flows: MapData,
    /// [`FLOW_SIZED_MAPS`], in order.
    flow_sized: Vec<MapData>,
    /// The highest value returned per (map, index).
    high: Mutex<StdHashMap<(&'static str, u32), Counter>>,
    /// The last flow count: when it was taken, what it cost, the count.
    flows_counted: Mutex<Option<(Instant, Duration, usize)>>,
}

/// A flow count is reused while younger than this many times what it cost: the walk takes
/// 0.3 s at a million flows (2 ms at none), and a scrape must not spend seconds on it.
const FLOW_COUNT_REUSE: u32 = 10;

impl CounterReader {
    /// Opens the counter maps pinned under `pin_dir` (the agent's bpffs directory).
    pub fn open(pin_dir: &std::path::Path) -> Result<CounterReader, DatapathError> {
        fn open<T>(
            dir: &std::path::Path,
            name: &'static str,
            f: impl FnOnce(aya::maps::Map) -> Result<T, aya::maps::MapError>,
        ) -> Result<T, DatapathError> {
            let err = || map_error(name, "opening its pin".into());
            let data = MapData::from_pin(dir.join(name)).map_err(err())?;
            f(aya::maps::Map::from_map_data(data).map_err(err())?).map_err(err())
        }
        Ok(CounterReader {
            rules: open(pin_dir, RULE_COUNTERS_MAP, PerCpuArray::try_from)?,
            gateways: open(pin_dir, GATEWAY_COUNTERS_MAP, PerCpuArray::try_from)?,
            failures: open(pin_dir, GATEWAY_FAILURES_MAP, PerCpuArray::try_from)?,
            new_flows: open(pin_dir, NEW_FLOWS_MAP, PerCpuArray::try_from)?,
            reasons: open(pin_dir, REASON_COUNTERS_MAP, PerCpuArray::try_from)?,
            flows: MapData::from_pin(pin_dir.join(FLOWS_MAP))
                .map_err(map_error(FLOWS_MAP, "opening its pin".into()))?,
            flow_sized: FLOW_SIZED_MAPS
                .iter()
                .map(|&name| {
                    MapData::from_pin(pin_dir.join(name))
                        .map_err(map_error(name, "opening its pin".into()))
                })
                .collect::<Result<_, _>>()?,
            high: Mutex::default(),
            flows_counted: Mutex::default(),
        })
    }

    /// Entry `index` of the per-CPU counters `m` (map `name`), never below what was returned.
    fn read(
        &self,
        m: &PerCpuArray<MapData, Counter>,
        name: &'static str,
        index: u32,
    ) -> Result<Counter, DatapathError> {
        let now = entry_sum(m, name, index)?;
        let mut high = self.high.lock().unwrap_or_else(|e| e.into_inner());
        let h = high.entry((name, index)).or_default();
        *h = Counter {
            packets: h.packets.max(now.packets),
            bytes: h.bytes.max(now.bytes),
        };
        Ok(*h)
    }

    /// Counter slot `slot` of the rules.
    pub fn rule(&self, slot: u16) -> Result<Counter, DatapathError> {
        self.read(&self.rules, RULE_COUNTERS_MAP, slot as u32)
    }

    /// What gateway `id` forwarded.
    pub fn gateway(&self, id: u16) -> Result<Counter, DatapathError> {
        self.read(&self.gateways, GATEWAY_COUNTERS_MAP, id as u32)
    }

    /// The flows gateway `id` was given from its routers' tables.
    pub fn gateway_new_flows(&self, id: u16) -> Result<Counter, DatapathError> {
        self.read(&self.new_flows, NEW_FLOWS_MAP, id as u32)
    }

    /// What was steered to gateway `id` and its egress did not take.
    pub fn gateway_failures(&self, id: u16) -> Result<Counter, DatapathError> {
        self.read(&self.failures, GATEWAY_FAILURES_MAP, id as u32)
    }

    /// Every reason, indexed by code.
    pub fn reasons(&self) -> Result<Vec<Counter>, DatapathError> {
        (0..reason::COUNT)
            .map(|r| self.read(&self.reasons, REASON_COUNTERS_MAP, r))
            .collect()
    }

    /// Entries in the flow table (a snapshot, see [`count_flows`]).
    ///
    /// Reused while younger than [`FLOW_COUNT_REUSE`] times its cost: counting takes at most
    /// a tenth of the time, however large the table.
    pub fn flow_count(&self) -> Result<usize, DatapathError> {
        let mut last = self.flows_counted.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, cost, n)) = *last
            && at.elapsed() < cost * FLOW_COUNT_REUSE
        {
            return Ok(n);
        }
        let start = Instant::now();
        let n = self.flow_count_now()?;
        *last = Some((Instant::now(), start.elapsed(), n));
        Ok(n)
    }

    /// [`CounterReader::flow_count`] without reuse (tests and the benchmark).
    pub(crate) fn flow_count_now(&self) -> Result<usize, DatapathError> {
        count_flows::<FlowValue>(&self.flows, FLOWS_MAP)
    }

    /// The flow table's size (`flow_table_size`, as the running maps were made).
    pub fn flow_capacity(&self) -> Result<u32, DatapathError> {
        Ok(self
            .flows
            .info()
            .map_err(map_error(FLOWS_MAP, "reading map info".into()))?
            .max_entries())
    }

    /// The kernel memory of each of [`FLOW_SIZED_MAPS`], in bytes (see [`sys::map_memory`]).
    pub fn flow_memory(&self) -> Result<Vec<(&'static str, u64)>, DatapathError> {
        use std::os::fd::AsFd;
        (FLOW_SIZED_MAPS.iter().zip(&self.flow_sized))
            .map(|(&name, data)| {
                let bytes =
                    sys::map_memory(data.fd().as_fd()).map_err(|error| DatapathError::Sys {
                        what: format!("reading {name}'s memory from /proc/self/fdinfo"),
                        error,
                    })?;
                Ok((name, bytes))
            })
            .collect()
    }
}

/// Privileged checks against the real kernel (root only; skipped otherwise).
#[cfg(test)]
mod privileged {
    use std::time::Instant;

    use aya::maps::{HashMap, Map, MapData, PerCpuArray, PerCpuValues};
    use aya::util::nr_cpus;
    use xwan_common::{
        Counter, FLOW_TABLE_SIZE, FLOWS_MAP, FlowKey, FlowValue, REASON_COUNTERS_MAP, reason,
    };

    use super::CounterReader;
    use crate::datapath::{Datapath, TestBpffs, bench::fill_flow_table};

    /// A counter the egress programs take a packet back from reads as it was until the
    /// kernel's count passes it again: what a scrape returns never goes down.
    #[test]
    fn reads_never_go_down() {
        // SAFETY: plain libc call.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let fs = TestBpffs::new().unwrap();
        let _dp = Datapath::load(fs.path()).unwrap();
        let reader = CounterReader::open(fs.path()).unwrap();
        let pin = MapData::from_pin(fs.path().join(REASON_COUNTERS_MAP)).unwrap();
        let mut map: PerCpuArray<MapData, Counter> =
            PerCpuArray::try_from(Map::from_map_data(pin).unwrap()).unwrap();
        let cpus = nr_cpus().unwrap() as u64;
        let mut set = |packets: u64| {
            let each = Counter {
                packets,
                bytes: 100 * packets,
            };
            let values = PerCpuValues::try_from(vec![each; cpus as usize]).unwrap();
            map.set(reason::STEER_CLASSIFIED, values, 0).unwrap();
        };
        let read = || reader.reasons().unwrap()[reason::STEER_CLASSIFIED as usize];
        for (kernel, seen) in [(10, 10), (7, 10), (10, 10), (12, 12)] {
            set(kernel);
            let want = Counter {
                packets: seen * cpus,
                bytes: 100 * seen * cpus,
            };
            assert_eq!(read(), want, "kernel at {kernel} per CPU");
        }
    }

    /// The batched count agrees with a walk of the keys (one syscall per entry) on a table
    /// at rest: empty, one entry, a few batches' worth, and full (262,144 entries: the count
    /// a scrape of a busy edge makes; both times are printed).
    #[test]
    fn batched_flow_count_matches_a_key_walk() {
        // SAFETY: plain libc call.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let fs = TestBpffs::new().unwrap();
        let dp = Datapath::load(fs.path()).unwrap();
        let reader = CounterReader::open(fs.path()).unwrap();
        let pin = MapData::from_pin(fs.path().join(FLOWS_MAP)).unwrap();
        let flows: HashMap<MapData, FlowKey, FlowValue> =
            HashMap::try_from(Map::from_map_data(pin).unwrap()).unwrap();
        let mut inserted = 0u32;
        for target in [0, 1, 3_000, FLOW_TABLE_SIZE] {
            fill_flow_table(fs.path(), inserted..target).unwrap();
            inserted = target;
            let t = Instant::now();
            let batched = dp.flow_count().unwrap();
            let batched_took = t.elapsed();
            let t = Instant::now();
            let walked = flows.keys().filter(Result::is_ok).count();
            let walked_took = t.elapsed();
            eprintln!(
                "{target} inserted: batched count {batched} in {batched_took:?}, key walk \
                 {walked} in {walked_took:?}"
            );
            assert_eq!(batched, walked, "after {target} inserts");
            assert_eq!(reader.flow_count_now().unwrap(), walked);
            // An LRU table may evict before it is full, never by much.
            assert!(walked as u32 <= target && walked as u32 >= target - target / 10);
        }
    }
}
