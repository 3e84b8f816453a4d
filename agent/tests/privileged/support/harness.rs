//! Runs the real programs (BPF_PROG_TEST_RUN) and the reference model side by side.

use xwan::datapath::{
    Datapath, Flag, FlowOffload, MovedRing, SkbRun, TestBpffs, XdpRun, skb_test_runnable,
};
use xwan_common::{
    FlowPath, Moved, PROG_TC_STEER, PROG_XDP_LAN,
    model::{Model, TcSteer, XdpAction, XdpOutcome},
    plan::{Plan, RouterTable},
    reason,
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_REDIRECT: u32 = 4;
pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_REDIRECT: i32 = 7;

/// Ingress interface for BPF_PROG_TEST_RUN: it must exist in the test's namespace.
pub const LO: u32 = 1;

pub struct Harness {
    pub dp: Datapath,
    pub model: Model,
    /// The kernel's moved-flow records, compared with the model's after every packet.
    moved: MovedRing,
    /// The flow table's offload flags, as the agent's offload thread sets them.
    offload: FlowOffload,
    /// The records the last [`Harness::check`] produced (kernel and model agreed on them).
    pub last_moved: Vec<Moved>,
    // Dropped last: unmounts the private bpffs holding the pins.
    _fs: TestBpffs,
}

impl Harness {
    pub fn new(plan: Plan) -> Harness {
        let fs = TestBpffs::new().expect("mount a private bpffs (are we root?)");
        let mut dp = Datapath::load(fs.path()).expect("load the data plane");
        let epoch = dp.apply(&plan).expect("apply the plan");
        let moved = dp.moved_ring().expect("the moved-flow ring");
        let offload = dp.flow_offload().expect("the flow table's offload handle");
        Harness {
            dp,
            model: Model::new(plan, epoch),
            moved,
            offload,
            last_moved: Vec::new(),
            _fs: fs,
        }
    }

    /// New ruleset on both sides.
    pub fn apply(&mut self, plan: Plan) {
        let epoch = self.dp.apply(&plan).expect("apply the plan");
        self.model.set_plan(plan, epoch);
    }

    /// `plan` as a change of gateways and router tables only (`Datapath::update`), on both
    /// sides: the epoch stays. `false`, with nothing written, when the kernel side refuses
    /// it (anything else changed).
    pub fn update(&mut self, plan: Plan) -> bool {
        let epoch = self.dp.epoch().expect("the epoch");
        let updated = self
            .dp
            .update(self.model.plan(), &plan)
            .expect("update the plan");
        assert_eq!(
            self.dp.epoch().expect("the epoch"),
            epoch,
            "no ruleset flip"
        );
        if updated.is_some() {
            self.model.set_plan(plan, epoch);
        }
        updated.is_some()
    }

    pub fn set_router(&mut self, id: u16, table: RouterTable) {
        self.dp.set_router(id, &table).expect("set router");
        self.model.set_router(id, table);
    }

    /// Puts `frame`'s flow on `path` on both sides (as the agent does when conntrack
    /// confirms or forgets it); whether the flow had an entry.
    pub fn set_path(&mut self, frame: &[u8], path: FlowPath) -> bool {
        let key = xwan_common::model::parse_ethernet(frame)
            .expect("a frame that parses")
            .flow_key(LO);
        let m = self.model.set_path(&key, path);
        let k = self.offload.set(&key, path).expect("setting the flags") != Flag::Absent;
        assert_eq!(k, m, "flow entry present in the kernel and the model");
        m
    }

    /// [`Harness::set_path`]: offloaded, untranslated (`true`), or back on the kernel path.
    pub fn set_offloaded(&mut self, frame: &[u8], offloaded: bool) -> bool {
        let path = if offloaded {
            FlowPath::Fast(None)
        } else {
            FlowPath::Kernel
        };
        self.set_path(frame, path)
    }

    /// Runs `xwan_xdp_lan` on `frame` in the kernel only.
    pub fn kernel(&self, frame: &[u8]) -> XdpRun {
        self.dp
            .xdp_test_run(PROG_XDP_LAN, frame, LO, 1)
            .expect("BPF_PROG_TEST_RUN")
    }

    /// Runs `xwan_tc_steer` on `frame` (what XDP passed) in the kernel.
    pub fn tc_steer(&self, frame: &[u8]) -> SkbRun {
        self.dp
            .skb_test_run(PROG_TC_STEER, frame, LO, 1)
            .expect("BPF_PROG_TEST_RUN of xwan_tc_steer")
    }

    /// Runs `xwan_tc_steer` on `frame` in the kernel and the model and asserts they agree:
    /// a redirect (the tunnel it redirects to is not observable in a test run, only that it
    /// redirects), or the frame and mark it continues with.
    pub fn check_tc(&self, frame: &[u8]) -> TcSteer {
        let m = self.model.tc_steer(LO, frame);
        let k = self.tc_steer(frame);
        let ctx = || format!("frame {frame:02x?}\nmodel: {m:02x?}\nkernel: {k:02x?}");
        match &m {
            TcSteer::Redirect(_) => assert_eq!(k.retval, TC_ACT_REDIRECT, "{}", ctx()),
            TcSteer::Kernel { mark, frame: out } => {
                assert_eq!(k.retval, TC_ACT_OK, "{}", ctx());
                assert_eq!((&k.frame, k.mark), (out, *mark), "{}", ctx());
            }
            TcSteer::Continue => {
                assert_eq!(k.retval, TC_ACT_OK, "{}", ctx());
                assert_eq!((&k.frame[..], k.mark), (frame, 0), "{}", ctx());
            }
        }
        m
    }

    /// Runs both and asserts they agree on verdict, reason, bytes, the moved-flow records, the
    /// hand-off to a tunnel or the kernel path (the kernel's `xwan_tc_steer` on what its XDP
    /// passed) and gateway counter. Returns the model's outcome.
    pub fn check(&mut self, frame: &[u8]) -> XdpOutcome {
        let m = self
            .model
            .xdp_lan(LO, frame, xwan::datapath::monotonic_coarse_ns());
        if frame.len() < 14 {
            // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header, and no driver
            // hands XDP one; the model must still leave them to the kernel.
            assert_eq!(m.action, XdpAction::Pass, "runt frame {frame:02x?}");
            assert!(m.frame == frame);
            return m;
        }
        let before = self.dp.reason_counter(m.reason).unwrap().packets;
        let k = self.kernel(frame);
        let ctx = || format!("frame {:02x?}\nmodel: {m:?}\nkernel: {k:?}", frame);
        let action = match m.action {
            XdpAction::Pass => XDP_PASS,
            XdpAction::Drop => XDP_DROP,
            XdpAction::Redirect => XDP_REDIRECT,
        };
        assert_eq!(k.action, action, "verdict differs\n{}", ctx());
        let after = self.dp.reason_counter(m.reason).unwrap().packets;
        assert_eq!(
            after,
            before + 1,
            "kernel did not count reason {} ({})\n{}",
            m.reason,
            reason::NAMES[m.reason as usize],
            ctx()
        );
        assert_eq!(k.frame, m.frame, "rewritten bytes differ\n{}", ctx());
        let (km, mm) = (self.moved.drain(), self.model.take_moved());
        assert_eq!(km, mm, "moved-flow records differ\n{}", ctx());
        self.last_moved = mm;
        assert!(k.meta.is_empty(), "XDP metadata left\n{}", ctx());
        // XDP hands off only whole IP headers, which a TC test run always accepts.
        if k.action == XDP_PASS && skb_test_runnable(&k.frame) {
            let tc = self.check_tc(&k.frame);
            let handoff = match tc {
                TcSteer::Redirect(i) => (Some(i), None),
                TcSteer::Kernel { mark, .. } => (None, Some(mark)),
                TcSteer::Continue => (None, None),
            };
            assert_eq!(handoff, (m.handoff, m.mark), "hand-off differs\n{}", ctx());
        }
        if m.handoff.is_some() || m.mark.is_some() {
            assert!(skb_test_runnable(&k.frame), "hand-off untested\n{}", ctx());
        }
        m
    }
}
