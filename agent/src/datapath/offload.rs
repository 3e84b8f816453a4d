//! Offloading a flow (`netfilter` mode): once conntrack has confirmed a flow on a
//! kernel-path gateway, its packets may skip the kernel ([`FLOW_OFFLOADED`], see
//! `xwan_common::model` step 10); when conntrack forgets it, they go back.
//!
//! Setting the flag needs only the flow table: the per-CPU flow cache never answers for a
//! kernel-path flow that is not offloaded. Clearing it also empties the flow's entries in
//! every CPU's cache, which would go on answering "offloaded" until they go stale. A block is
//! read and written whole, so an update another CPU made meanwhile to another entry of the
//! block may be undone: harmless, a cache entry is checked against the epoch, its router's
//! version and its age before every use.

use std::os::fd::AsFd;

use aya::maps::{HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues};
use xwan_common::{
    FLOW_CACHE_BLOCK_ENTRIES, FLOW_CACHE_MAP, FLOW_OFFLOADED, FLOW_SNAT, FLOWS_MAP, FlowCacheBlock,
    FlowCacheEntry, FlowKey, FlowPath, FlowValue, SNAT_MAP, Snat, hash,
};

use super::{Datapath, DatapathError, loader::map_data};

fn map_error(map: &'static str, op: &str) -> impl FnOnce(MapError) -> DatapathError {
    let op = op.to_string();
    move |error| DatapathError::Map {
        map,
        op,
        error: Box::new(error),
    }
}

/// The flow table, flow cache and source NAT table, with file descriptors of their own: the
/// thread that follows conntrack (`crate::offload`) sets and clears flags while the daemon
/// commits.
pub struct FlowOffload {
    flows: HashMap<MapData, FlowKey, FlowValue>,
    cache: PerCpuArray<MapData, FlowCacheBlock>,
    snat: HashMap<MapData, FlowKey, Snat>,
    /// Entries of each (bounds a walk while the data plane inserts and evicts).
    capacity: usize,
}

impl Datapath {
    /// A handle of its own on the flow table and flow cache.
    pub fn flow_offload(&self) -> Result<FlowOffload, DatapathError> {
        let dup = |name: &'static str| -> Result<MapData, DatapathError> {
            let data = map_data(self.map(name)?).ok_or(DatapathError::Missing {
                what: "map",
                name: name.into(),
            })?;
            let fd =
                data.fd().as_fd().try_clone_to_owned().map_err(|e| {
                    map_error(name, "duplicating its descriptor")(MapError::IoError(e))
                })?;
            MapData::from_fd(fd).map_err(map_error(name, "opening its descriptor"))
        };
        let flows = HashMap::try_from(Map::LruHashMap(dup(FLOWS_MAP)?))
            .map_err(map_error(FLOWS_MAP, "opening"))?;
        let cache = PerCpuArray::try_from(Map::PerCpuArray(dup(FLOW_CACHE_MAP)?))
            .map_err(map_error(FLOW_CACHE_MAP, "opening"))?;
        let snat = HashMap::try_from(Map::HashMap(dup(SNAT_MAP)?))
            .map_err(map_error(SNAT_MAP, "opening"))?;
        Ok(FlowOffload {
            flows,
            cache,
            snat,
            capacity: self.flow_table as usize,
        })
    }
}

/// A flow's flag, before a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// The flow has no entry (never seen, or evicted).
    Absent,
    Set,
    Clear,
}

impl FlowOffload {
    /// Flow `key`'s flag.
    pub fn get(&self, key: &FlowKey) -> Result<Flag, DatapathError> {
        match self.flows.get(key, 0) {
            Ok(v) if v.flags & FLOW_OFFLOADED != 0 => Ok(Flag::Set),
            Ok(_) => Ok(Flag::Clear),
            Err(MapError::KeyNotFound) => Ok(Flag::Absent),
            Err(e) => Err(map_error(FLOWS_MAP, "reading a flow")(e)),
        }
    }

    /// Puts flow `key` on `path` (as `Model::set_path` specifies); returns its
    /// [`FLOW_OFFLOADED`] as it was. A translation is written before the flags that use it
    /// and removed after them. The data plane may rewrite the entry meanwhile; it keeps the
    /// flags while the flow keeps its gateway, so only a move (whose conntrack entry is reset
    /// anyway) loses them.
    pub fn set(&mut self, key: &FlowKey, path: FlowPath) -> Result<Flag, DatapathError> {
        let value = match self.flows.get(key, 0) {
            Ok(v) => Some(v),
            Err(MapError::KeyNotFound) => None,
            Err(e) => return Err(map_error(FLOWS_MAP, "reading a flow")(e)),
        };
        let Some(mut value) = value else {
            // Nothing uses a translation left behind by an evicted entry.
            self.remove_snat(key)?;
            return Ok(Flag::Absent);
        };
        let was = if value.flags & FLOW_OFFLOADED != 0 {
            Flag::Set
        } else {
            Flag::Clear
        };
        let flags = match path {
            FlowPath::Kernel => 0,
            FlowPath::Fast(None) => FLOW_OFFLOADED,
            FlowPath::Fast(Some(s)) => {
                self.snat
                    .insert(key, s, 0)
                    .map_err(map_error(SNAT_MAP, "writing a translation"))?;
                FLOW_OFFLOADED | FLOW_SNAT
            }
        };
        if value.flags & (FLOW_OFFLOADED | FLOW_SNAT) != flags {
            value.flags = value.flags & !(FLOW_OFFLOADED | FLOW_SNAT) | flags;
            // BPF_EXIST: an entry evicted meanwhile stays gone.
            match self.flows.insert(key, value, 2) {
                Ok(()) => {}
                Err(MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
                {
                    self.remove_snat(key)?;
                    return Ok(Flag::Absent);
                }
                Err(e) => return Err(map_error(FLOWS_MAP, "writing a flow")(e)),
            }
            if was == Flag::Set {
                self.forget_cached(key)?;
            }
        }
        if flags & FLOW_SNAT == 0 {
            self.remove_snat(key)?;
        }
        Ok(was)
    }

    /// Removes flow `key`'s translation, if it has one.
    fn remove_snat(&mut self, key: &FlowKey) -> Result<(), DatapathError> {
        match self.snat.remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            Err(e) => Err(map_error(SNAT_MAP, "removing a translation")(e)),
        }
    }

    /// Clears every flow's flag (conntrack's changes were lost, or the mode changed); the
    /// number of flows that had it.
    pub fn clear_all(&mut self) -> Result<usize, DatapathError> {
        let offloaded: Vec<FlowKey> = self
            .flows
            .iter()
            .take(self.capacity)
            .filter_map(Result::ok)
            .filter(|(_, v)| v.flags & FLOW_OFFLOADED != 0)
            .map(|(k, _)| k)
            .collect();
        for k in &offloaded {
            self.set(k, FlowPath::Kernel)?;
        }
        // Translations whose flow the table evicted meanwhile.
        let left: Vec<FlowKey> = self
            .snat
            .keys()
            .take(self.capacity)
            .filter_map(Result::ok)
            .collect();
        for k in &left {
            self.remove_snat(k)?;
        }
        Ok(offloaded.len())
    }

    /// Empties the entries holding `key` in every CPU's flow cache.
    fn forget_cached(&mut self, key: &FlowKey) -> Result<(), DatapathError> {
        for slot in hash::flow_cache_slots(key) {
            let block = slot / FLOW_CACHE_BLOCK_ENTRIES;
            let i = (slot % FLOW_CACHE_BLOCK_ENTRIES) as usize;
            let values = self
                .cache
                .get(&block, 0)
                .map_err(map_error(FLOW_CACHE_MAP, "reading a block"))?;
            let mut blocks: Vec<FlowCacheBlock> = values.iter().copied().collect();
            let mut changed = false;
            for b in &mut blocks {
                if b.entries[i].key == *key {
                    b.entries[i] = FlowCacheEntry::default();
                    changed = true;
                }
            }
            if changed {
                let values = PerCpuValues::try_from(blocks).map_err(|e| {
                    map_error(FLOW_CACHE_MAP, "building a block")(MapError::IoError(e))
                })?;
                self.cache
                    .set(block, values, 0)
                    .map_err(map_error(FLOW_CACHE_MAP, "writing a block"))?;
            }
        }
        Ok(())
    }
}
