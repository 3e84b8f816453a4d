//! Loading the eBPF object: maps created or adopted from their pins, programs verified.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use aya::maps::{Array, Map, MapData, MapType};
use aya::programs::Program;
use aya::{Ebpf, EbpfLoader};
use xwan_common as c;
use xwan_common::plan::{HashMode, RouterTable};

use super::attach::{AttachPolicy, Attachment};
use super::commit::{Flips, SlotBuffer};
use super::grace::GraceKeeper;
use super::{DatapathError, bpffs, object::EBPF_OBJECT};

/// Every program of the object, in load order (the second stage before the first, so that
/// [`c::JUMP_MAP`] is filled before anything can reach it).
pub const PROGRAMS: [&str; 8] = [
    c::PROG_XDP_DECIDE,
    c::PROG_XDP_LAN,
    c::PROG_XDP_BASELINE,
    c::PROG_XDP_PASS,
    c::PROG_TC_STEER,
    c::PROG_TC_RETURN,
    c::PROG_TRACE_XMIT,
    c::PROG_TRACE_REDIRECT_ERR,
];

/// The loaded data plane: maps (pinned), programs (verified), attachments.
///
/// Dropping it (the agent exits) detaches nothing: maps and attachments stay pinned and keep
/// forwarding until the next agent adopts them; [`Datapath::detach_all`] removes the
/// attachments (see the `attach` module).
#[derive(Debug)]
pub struct Datapath {
    pub(super) ebpf: Ebpf,
    pub(super) pin_dir: PathBuf,
    pub(super) adopted: Vec<&'static str>,
    /// Entries in each of [`c::FLOW_SIZED_MAPS`].
    pub(super) flow_table: u32,
    pub(super) attachments: Vec<Attachment>,
    /// Interfaces (ifindex, name) on which we added the clsact qdisc ourselves.
    pub(super) clsact: Vec<(u32, String)>,
    pub(super) policy: AttachPolicy,
    pub(super) grace: GraceKeeper,
    pub(super) flips: Flips,
    pub(super) slot_buf: SlotBuffer,
    /// What [`Datapath::watch_egress`] achieved (`None`: not asked).
    pub(super) egress: Option<super::EgressWatch>,
}

/// What a map must look like: kernel type, key and value sizes (from `xwan_common`'s types).
struct MapSpec {
    name: &'static str,
    kind: MapType,
    key: usize,
    /// `None`: not checked (DEVMAP values depend on kernel features).
    value: Option<usize>,
}

const fn spec<K, V>(name: &'static str, kind: MapType) -> MapSpec {
    MapSpec {
        name,
        kind,
        key: size_of::<K>(),
        value: Some(size_of::<V>()),
    }
}

/// The maps of the object and their layouts.
const MAPS: [MapSpec; 33] = [
    spec::<u32, c::IfaceInfo>(c::IFACES_MAP, MapType::Hash),
    spec::<u32, c::IfaceInfo>(c::IFACE_ARRAY_MAP, MapType::Array),
    spec::<c::AddrKey, u8>(c::LOCAL_MAP, MapType::Hash),
    spec::<u32, c::Config>(c::CONFIG_MAP, MapType::Array),
    spec::<u32, u32>(c::RULESET_MAP, MapType::Array),
    spec::<aya::maps::lpm_trie::Key<c::Lpm4Data>, c::RuleBitmap>(c::SRC4_MAP, MapType::LpmTrie),
    spec::<aya::maps::lpm_trie::Key<c::Lpm4Data>, c::RuleBitmap>(c::DST4_MAP, MapType::LpmTrie),
    spec::<aya::maps::lpm_trie::Key<c::Lpm6Data>, c::RuleBitmap>(c::SRC6_MAP, MapType::LpmTrie),
    spec::<aya::maps::lpm_trie::Key<c::Lpm6Data>, c::RuleBitmap>(c::DST6_MAP, MapType::LpmTrie),
    spec::<u32, c::RuleBitmap>(c::PROTO_MAP, MapType::Array),
    spec::<u32, c::RuleBitmap>(c::DSCP_MAP, MapType::Array),
    spec::<u32, c::PortTable>(c::PORTMAP_MAP, MapType::Array),
    spec::<u32, c::RuleBitmap>(c::PORTBM_MAP, MapType::Array),
    spec::<c::IfaceRuleKey, c::RuleBitmap>(c::IFBM_MAP, MapType::Hash),
    spec::<u32, c::RuleAction>(c::RULES_MAP, MapType::Array),
    spec::<u32, u32>(c::ROUTER_VERSION_MAP, MapType::Array),
    spec::<u32, c::SlotTable>(c::SLOTS_MAP, MapType::Array),
    spec::<u32, c::GatewayInfo>(c::GATEWAYS_MAP, MapType::Array),
    MapSpec {
        name: c::DEVMAP_MAP,
        kind: MapType::DevMap,
        key: 4,
        value: None,
    },
    spec::<c::FlowKey, c::FlowValue>(c::FLOWS_MAP, MapType::LruHash),
    spec::<c::FlowKey, c::Snat>(c::SNAT_MAP, MapType::Hash),
    spec::<u32, c::FlowCacheBlock>(c::FLOW_CACHE_MAP, MapType::PerCpuArray),
    spec::<c::FlowKey, c::ReturnValue>(c::RETURN_MAP, MapType::LruHash),
    spec::<u32, c::LinkInfo>(c::LINKS_MAP, MapType::Hash),
    spec::<u32, c::Counter>(c::RULE_COUNTERS_MAP, MapType::PerCpuArray),
    spec::<u32, c::Counter>(c::GATEWAY_COUNTERS_MAP, MapType::PerCpuArray),
    spec::<u32, c::Counter>(c::NEW_FLOWS_MAP, MapType::PerCpuArray),
    spec::<u32, c::Counter>(c::REASON_COUNTERS_MAP, MapType::PerCpuArray),
    spec::<u32, c::Counter>(c::GATEWAY_FAILURES_MAP, MapType::PerCpuArray),
    spec::<u32, c::EgressLog>(c::EGRESS_LOG_MAP, MapType::PerCpuArray),
    // A ring has neither key nor value: its records are `Moved`s.
    MapSpec {
        name: c::MOVED_MAP,
        kind: MapType::RingBuf,
        key: 0,
        value: Some(0),
    },
    spec::<u32, c::ParsedPacket>(c::SCRATCH_MAP, MapType::PerCpuArray),
    spec::<u32, u32>(c::JUMP_MAP, MapType::ProgramArray),
];

/// The `MapData` inside the map kinds the object uses.
pub(super) fn map_data(m: &Map) -> Option<&MapData> {
    match m {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::LpmTrie(d)
        | Map::LruHashMap(d)
        | Map::PerCpuArray(d)
        | Map::DevMap(d)
        | Map::ProgramArray(d)
        | Map::RingBuf(d) => Some(d),
        _ => None,
    }
}

impl Datapath {
    /// Loads the embedded eBPF object with every map pinned in `pin_dir` (made sure to be on a
    /// bpffs, mounting one if needed): maps already pinned there are adopted with their
    /// contents, the others created and pinned. Then verifies and loads all the programs and
    /// points the LAN program's tail call at its second stage.
    ///
    /// Errors name the map or program concerned; a program the verifier rejects comes with the
    /// verifier's log.
    pub fn load(pin_dir: &Path) -> Result<Datapath, DatapathError> {
        Self::load_sized(pin_dir, c::FLOW_TABLE_SIZE)
    }

    /// [`Datapath::load`] with `flow_table` entries in each of [`c::FLOW_SIZED_MAPS`]
    /// (`[agent] flow_table_size`). A pinned one of another size is replaced: its flows are
    /// decided anew (and the new size logged).
    pub fn load_sized(pin_dir: &Path, flow_table: u32) -> Result<Datapath, DatapathError> {
        match bpffs::ensure_bpffs(pin_dir) {
            Ok(Some(m)) => log::info!("mounted a bpf filesystem on {}", m.display()),
            Ok(None) => {}
            Err(error) => {
                return Err(DatapathError::Bpffs {
                    path: pin_dir.to_owned(),
                    error,
                });
            }
        }
        resize_pinned(pin_dir, flow_table)?;
        let adopted: Vec<&'static str> = MAPS
            .iter()
            .map(|s| s.name)
            .filter(|n| pin_dir.join(n).exists())
            .collect();
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(pin_dir);
        for name in c::FLOW_SIZED_MAPS {
            loader.map_max_entries(name, flow_table);
        }
        let ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(|error| DatapathError::Object {
                pin_dir: pin_dir.to_owned(),
                error: Box::new(error),
            })?;
        check_maps(&ebpf, pin_dir, flow_table)?;
        if adopted.is_empty() {
            log::info!(
                "created the data plane's maps, pinned under {}",
                pin_dir.display()
            );
        } else {
            log::info!(
                "adopted {} pinned maps from {} (running state kept)",
                adopted.len(),
                pin_dir.display()
            );
        }
        // A previous agent may have flipped just before it stopped: one flip is pending.
        let grace = GraceKeeper::new(true).map_err(|error| DatapathError::Sys {
            what: "starting the RCU grace-period thread (BPF_MAP_CREATE of an ARRAY_OF_MAPS)"
                .into(),
            error,
        })?;
        let mut dp = Datapath {
            ebpf,
            pin_dir: pin_dir.to_owned(),
            adopted,
            flow_table,
            attachments: Vec::new(),
            clsact: Vec::new(),
            policy: AttachPolicy::default(),
            flips: Flips::all_at(grace.last(), Vec::new()),
            slot_buf: SlotBuffer::default(),
            egress: None,
            grace,
        };
        let versions = (0..c::MAX_ROUTERS as u16)
            .map(|id| dp.router_version(id))
            .collect::<Result<_, _>>()?;
        dp.flips = Flips::all_at(dp.grace.last(), versions);
        for name in PROGRAMS {
            dp.load_program(name)?;
        }
        dp.fill_jump_table()?;
        Ok(dp)
    }

    /// `XWAN_JUMP[JUMP_DECIDE]` = this object's `xwan_xdp_decide`. On an adopted table this
    /// replaces the previous agent's second stage in one map update.
    fn fill_jump_table(&mut self) -> Result<(), DatapathError> {
        let fd = {
            let p = self
                .ebpf
                .program(c::PROG_XDP_DECIDE)
                .ok_or(DatapathError::Missing {
                    what: "program",
                    name: c::PROG_XDP_DECIDE.into(),
                })?;
            p.fd()
                .map_err(|error| DatapathError::ProgramLoad {
                    program: c::PROG_XDP_DECIDE,
                    error: Box::new(error),
                })?
                .try_clone()
                .map_err(|error| DatapathError::Sys {
                    what: format!("duplicating {}'s file descriptor", c::PROG_XDP_DECIDE),
                    error,
                })?
        };
        let map_err = |op: &str, error: aya::maps::MapError| DatapathError::Map {
            map: c::JUMP_MAP,
            op: op.into(),
            error: Box::new(error),
        };
        let mut jump = aya::maps::ProgramArray::try_from(self.map_mut(c::JUMP_MAP)?)
            .map_err(|e| map_err("opening", e))?;
        jump.set(c::JUMP_DECIDE, &fd, 0)
            .map_err(|e| map_err("pointing the LAN program's tail call at xwan_xdp_decide", e))
    }

    fn load_program(&mut self, name: &'static str) -> Result<(), DatapathError> {
        let result = match self.ebpf.program_mut(name) {
            Some(Program::Xdp(p)) => p.load(),
            Some(Program::SchedClassifier(p)) => p.load(),
            Some(Program::TracePoint(p)) => p.load(),
            Some(other) => {
                return Err(DatapathError::Missing {
                    what: "XDP, TC or tracepoint program",
                    name: format!("{name} (it is a {:?} program)", other.prog_type()),
                });
            }
            None => {
                return Err(DatapathError::Missing {
                    what: "program",
                    name: name.into(),
                });
            }
        };
        result.map_err(|error| DatapathError::ProgramLoad {
            program: name,
            error: Box::new(error),
        })?;
        let insns = self
            .ebpf
            .program(name)
            .and_then(|p| p.info().ok())
            .and_then(|i| i.verified_instruction_count());
        match insns {
            Some(n) => log::debug!("loaded program {name} (verifier processed {n} instructions)"),
            None => log::debug!("loaded program {name}"),
        }
        Ok(())
    }

    /// The directory the maps are pinned in.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Maps that were already pinned when this datapath was loaded (their state was kept).
    pub fn adopted_maps(&self) -> &[&'static str] {
        &self.adopted
    }

    /// Router `id`'s live table as committed (by this agent or the one before it), e.g. so
    /// that a restarted agent keeps its slots in place.
    pub fn router_table(&self, id: u16) -> Result<RouterTable, DatapathError> {
        let version = self.router_version(id)?;
        let slots: Array<&MapData, c::SlotTable> = Array::try_from(self.map(c::SLOTS_MAP)?)
            .map_err(|error| DatapathError::Map {
                map: c::SLOTS_MAP,
                op: "opening".into(),
                error: Box::new(error),
            })?;
        let t = slots
            .get(&c::slots_index(id as u32, version), 0)
            .map_err(|error| DatapathError::Map {
                map: c::SLOTS_MAP,
                op: format!("reading router {id}'s table"),
                error: Box::new(error),
            })?;
        Ok(RouterTable {
            slots: if t.active > 0 {
                t.slots.to_vec()
            } else {
                vec![]
            },
            keep: (0..c::MAX_GATEWAYS as u16)
                .filter(|&g| t.keeps(g))
                .collect(),
            hash: if t.flags & c::TABLE_HASH_SOURCE != 0 {
                HashMode::Source
            } else {
                HashMode::Connection
            },
            on_failure_pass: t.flags & c::TABLE_ON_FAILURE_PASS != 0,
        })
    }

    /// The file descriptor of a loaded program (e.g. for [`super::xdp_test_run`]).
    pub fn program_fd(&self, name: &str) -> Result<BorrowedFd<'_>, DatapathError> {
        let p = self
            .ebpf
            .program(name)
            .ok_or_else(|| DatapathError::Missing {
                what: "program",
                name: name.into(),
            })?;
        let fd = p.fd().map_err(|error| DatapathError::ProgramLoad {
            program: static_name(name),
            error: Box::new(error),
        })?;
        Ok(fd.as_fd())
    }

    /// The underlying aya object (escape hatch for tests and tools).
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    pub(super) fn map(&self, name: &'static str) -> Result<&Map, DatapathError> {
        self.ebpf.map(name).ok_or(DatapathError::Missing {
            what: "map",
            name: name.into(),
        })
    }

    pub(super) fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, DatapathError> {
        self.ebpf.map_mut(name).ok_or(DatapathError::Missing {
            what: "map",
            name: name.into(),
        })
    }

    /// A map's file descriptor.
    pub(super) fn map_fd(&self, name: &'static str) -> Result<BorrowedFd<'_>, DatapathError> {
        let m = self.map(name)?;
        map_data(m)
            .map(|d| d.fd().as_fd())
            .ok_or(DatapathError::Missing {
                what: "map of a supported kind",
                name: name.into(),
            })
    }
}

/// `name` as one of the `'static` program names, for error values.
fn static_name(name: &str) -> &'static str {
    PROGRAMS
        .iter()
        .find(|&&p| p == name)
        .copied()
        .unwrap_or("(unknown program)")
}

/// Every map has the layout this build expects (an adopted pin may come from another build).
/// Removes the pins of [`c::FLOW_SIZED_MAPS`] whose size is not `entries`, so that the load
/// creates them anew (a map's size is fixed at its creation). Programs still attached keep
/// the old maps until the new ones replace them.
fn resize_pinned(pin_dir: &Path, entries: u32) -> Result<(), DatapathError> {
    for name in c::FLOW_SIZED_MAPS {
        let path = pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        let err = |op: &str| {
            let op = op.to_owned();
            move |error: aya::maps::MapError| DatapathError::Map {
                map: name,
                op,
                error: Box::new(error),
            }
        };
        let old = MapData::from_pin(&path)
            .map_err(err("opening its pin"))?
            .info()
            .map_err(err("reading map info"))?
            .max_entries();
        if old != entries {
            std::fs::remove_file(&path).map_err(|error| DatapathError::Sys {
                what: format!("removing {} to resize it", path.display()),
                error,
            })?;
            log::warn!(
                "{name} resized from {old} to {entries} entries (flow_table_size): the flows it \
                 held are decided anew"
            );
        }
    }
    Ok(())
}

fn check_maps(ebpf: &Ebpf, pin_dir: &Path, flow_table: u32) -> Result<(), DatapathError> {
    // The sizes this build's object defines (an adopted map may come from another build).
    let object = aya_obj::Object::parse(EBPF_OBJECT).map_err(|error| DatapathError::Sys {
        what: "parsing the embedded eBPF object's map definitions".into(),
        error: std::io::Error::other(error),
    })?;
    for s in &MAPS {
        let map = ebpf.map(s.name).ok_or(DatapathError::Missing {
            what: "map",
            name: s.name.into(),
        })?;
        let path = pin_dir.join(s.name);
        let stale = |detail: String| DatapathError::StaleMap {
            map: s.name,
            path: path.clone(),
            detail,
        };
        let data = map_data(map).ok_or_else(|| stale(format!("unexpected map kind {map:?}")))?;
        let info = data.info().map_err(|error| DatapathError::Map {
            map: s.name,
            op: "reading map info".into(),
            error: Box::new(error),
        })?;
        let kind = info.map_type().map_err(|error| DatapathError::Map {
            map: s.name,
            op: "reading map type".into(),
            error: Box::new(error),
        })?;
        if kind != s.kind {
            return Err(stale(format!(
                "kernel map type {kind:?}, expected {:?}",
                s.kind
            )));
        }
        if info.key_size() as usize != s.key {
            return Err(stale(format!(
                "key size {}, expected {}",
                info.key_size(),
                s.key
            )));
        }
        if let Some(v) = s.value
            && info.value_size() as usize != v
        {
            return Err(stale(format!(
                "value size {}, expected {v}",
                info.value_size()
            )));
        }
        let entries = if c::FLOW_SIZED_MAPS.contains(&s.name) {
            Some(flow_table)
        } else {
            object.maps.get(s.name).map(|m| m.max_entries())
        };
        if let Some(entries) = entries
            && info.max_entries() != entries
        {
            return Err(stale(format!(
                "{} entries, expected {entries}",
                info.max_entries()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_pinned_map_is_reported_with_what_to_do() {
        // SAFETY: plain libc call.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let fs = super::super::TestBpffs::new().unwrap();
        // An older layout of XWAN_CONFIG: 4-byte values instead of `Config`'s.
        let old = aya::maps::Array::<MapData, u32>::create(1, 0).unwrap();
        old.pin(fs.path().join(c::CONFIG_MAP)).unwrap();
        let e = Datapath::load(fs.path()).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                DatapathError::StaleMap {
                    map: c::CONFIG_MAP,
                    ..
                }
            ),
            "{msg}"
        );
        let expected = format!(
            "value size 4, expected {}",
            std::mem::size_of::<c::Config>()
        );
        assert!(msg.contains(&expected), "{msg}");
        assert!(msg.contains("rm "), "{msg}");
    }

    #[test]
    fn a_pinned_map_of_another_size_is_reported() {
        // SAFETY: plain libc call.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let fs = super::super::TestBpffs::new().unwrap();
        // An older build's gateway table: a quarter of the gateways.
        let old =
            aya::maps::Array::<MapData, c::GatewayInfo>::create(c::MAX_GATEWAYS / 4, 0).unwrap();
        old.pin(fs.path().join(c::GATEWAYS_MAP)).unwrap();
        let msg = Datapath::load(fs.path()).unwrap_err().to_string();
        let expected = format!(
            "{} entries, expected {}",
            c::MAX_GATEWAYS / 4,
            c::MAX_GATEWAYS
        );
        assert!(
            msg.contains(c::GATEWAYS_MAP) && msg.contains(&expected),
            "{msg}"
        );
    }

    /// `flow_table_size` sizes the three flow-keyed maps; a restart with the same size adopts
    /// them with their flows, one with another size makes them anew (its flows are decided
    /// again), and the kernel's memory for them follows the size.
    #[test]
    fn the_flow_tables_take_the_configured_size() {
        // SAFETY: plain libc call.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let fs = super::super::TestBpffs::new().unwrap();
        let sizes = |dp: &Datapath| -> Vec<u32> {
            (c::FLOW_SIZED_MAPS.iter())
                .map(|n| {
                    map_data(dp.map(n).unwrap())
                        .unwrap()
                        .info()
                        .unwrap()
                        .max_entries()
                })
                .collect()
        };
        let memory = || -> u64 {
            let reader = super::super::CounterReader::open(fs.path()).unwrap();
            reader.flow_memory().unwrap().iter().map(|(_, b)| b).sum()
        };
        let has_flow = |dp: &Datapath| !dp.flows().unwrap().is_empty();

        let dp = Datapath::load_sized(fs.path(), 4_096).unwrap();
        assert_eq!(sizes(&dp), [4_096; 3]);
        let small = memory();
        super::super::bench::fill_flow_table(fs.path(), 0..1).unwrap();
        drop(dp);

        let dp = Datapath::load_sized(fs.path(), 4_096).unwrap();
        assert!(dp.adopted_maps().contains(&c::FLOWS_MAP));
        assert!(has_flow(&dp), "the same size adopts the flows");
        drop(dp);

        let dp = Datapath::load_sized(fs.path(), 65_536).unwrap();
        assert_eq!(sizes(&dp), [65_536; 3]);
        assert!(!has_flow(&dp), "another size starts empty");
        let large = memory();
        println!("flow-sized maps: {small} bytes at 4,096 flows, {large} at 65,536");
        assert!(large > small * 8, "{small} → {large} bytes");
    }

    /// Each program alone must stay well inside the verifier's budget (1M instructions
    /// processed) on the running kernel; the VM suite runs this on Linux 6.1, whose verifier
    /// explores more paths than current ones.
    #[test]
    fn every_program_passes_the_verifier_with_headroom() {
        // SAFETY: plain libc call.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let fs = super::super::TestBpffs::new().unwrap();
        let dp = Datapath::load(fs.path()).unwrap();
        for name in PROGRAMS {
            let info = dp.ebpf.program(name).unwrap().info().unwrap();
            // None before Linux 5.16, which does not report the count.
            let Some(n) = info.verified_instruction_count() else {
                continue;
            };
            println!("{name}: verifier processed {n} instructions");
            assert!(
                n < 500_000,
                "{name}: the verifier processed {n} instructions, over half its limit"
            );
        }
    }

    #[test]
    fn router_tables_read_back_as_committed() {
        // SAFETY: plain libc call.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root");
            return;
        }
        let fs = super::super::TestBpffs::new().unwrap();
        let mut dp = Datapath::load(fs.path()).unwrap();
        let mut t = RouterTable::single(3);
        t.slots[7] = 5;
        t.keep = vec![3, 5, 700];
        t.hash = HashMode::Source;
        t.on_failure_pass = true;
        for _ in 0..2 {
            // Twice: both copies of the double buffer.
            dp.set_router(4, &t).unwrap();
            assert_eq!(dp.router_table(4).unwrap(), t);
        }
        let empty = RouterTable {
            slots: vec![],
            keep: vec![],
            hash: HashMode::Connection,
            on_failure_pass: false,
        };
        assert_eq!(dp.router_table(5).unwrap(), empty);
    }

    #[test]
    fn datapath_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<Datapath>();
        send::<DatapathError>();
    }

    #[test]
    fn every_map_is_specified_once() {
        let mut names: Vec<_> = MAPS.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), MAPS.len());
    }
}
