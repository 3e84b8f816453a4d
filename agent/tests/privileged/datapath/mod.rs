//! The data plane on its own, without the agent: crafted packets per feature, the model
//! compared with the kernel on generated packets (both through BPF_PROG_TEST_RUN), and the
//! programs attached to real interfaces in network namespaces.

mod features;
mod model;
mod netns;
