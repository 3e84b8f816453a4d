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

use aya::maps::{HashMap, MapData, PerCpuArray, PerCpuValues};
use xwan_common::{
    FLOW_CACHE_BLOCK_ENTRIES, FLOW_CACHE_MAP, FLOW_OFFLOADED, FLOWS_MAP, FlowCacheBlock,
    FlowCacheEntry, FlowKey, FlowValue, hash,
};

use super::{Datapath, DatapathError};

fn map_error(map: &'static str, op: &str) -> impl FnOnce(aya::maps::MapError) -> DatapathError {
    let op = op.to_string();
    move |error| DatapathError::Map {
        map,
        op,
        error: Box::new(error),
    }
}

impl Datapath {
    /// Sets (`true`) or clears flow `key`'s [`FLOW_OFFLOADED`]; `false` when the flow has no
    /// entry (never seen, or evicted). The data plane may rewrite the entry meanwhile; it
    /// keeps the flag while the flow keeps its gateway, so only a move (whose conntrack entry
    /// is reset anyway) loses it.
    pub fn set_offloaded(&mut self, key: &FlowKey, offloaded: bool) -> Result<bool, DatapathError> {
        let mut flows: HashMap<&mut MapData, FlowKey, FlowValue> =
            HashMap::try_from(self.map_mut(FLOWS_MAP)?).map_err(map_error(FLOWS_MAP, "opening"))?;
        let mut value = match flows.get(key, 0) {
            Ok(v) => v,
            Err(aya::maps::MapError::KeyNotFound) => return Ok(false),
            Err(e) => return Err(map_error(FLOWS_MAP, "reading a flow")(e)),
        };
        if offloaded {
            value.flags |= FLOW_OFFLOADED;
        } else {
            value.flags &= !FLOW_OFFLOADED;
        }
        // BPF_EXIST: an entry evicted meanwhile stays gone.
        match flows.insert(key, value, 2) {
            Ok(()) => {}
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                return Ok(false);
            }
            Err(e) => return Err(map_error(FLOWS_MAP, "writing a flow")(e)),
        }
        if !offloaded {
            self.forget_cached(key)?;
        }
        Ok(true)
    }

    /// Empties the entries holding `key` in every CPU's flow cache.
    fn forget_cached(&mut self, key: &FlowKey) -> Result<(), DatapathError> {
        let mut cache: PerCpuArray<&mut MapData, FlowCacheBlock> =
            PerCpuArray::try_from(self.map_mut(FLOW_CACHE_MAP)?)
                .map_err(map_error(FLOW_CACHE_MAP, "opening"))?;
        for slot in hash::flow_cache_slots(key) {
            let block = slot / FLOW_CACHE_BLOCK_ENTRIES;
            let i = (slot % FLOW_CACHE_BLOCK_ENTRIES) as usize;
            let values = cache
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
                    map_error(FLOW_CACHE_MAP, "building a block")(aya::maps::MapError::IoError(e))
                })?;
                cache
                    .set(block, values, 0)
                    .map_err(map_error(FLOW_CACHE_MAP, "writing a block"))?;
            }
        }
        Ok(())
    }
}
