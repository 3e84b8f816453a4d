//! The lab's namespace primitives: the shared ones of `xwan-testkit` (see there, with the
//! ethtool offload switches veths want), plus what only the lab needs: its own message for a
//! namespace that already exists.
//!
//! What a reader may change: nothing here knows the lab's topology; keep it that way. A
//! helper that the load test or the agent's tests could use belongs in `xwan-testkit`.

use anyhow::{Result, bail};
pub use xwan_testkit::{
    Feature, Netns, delete, enter_by_name, list, run, set_feature, set_nonblocking, tun,
};

/// Creates namespace `name` with `lo` up. Fails if it exists (a lab already running, or
/// one that was killed: `cargo xtask lab --down` removes it).
pub fn create(name: &str) -> Result<Netns> {
    if std::path::Path::new("/run/netns").join(name).exists() {
        bail!(
            "network namespace '{name}' already exists: another lab is running or one was \
             killed; remove it with `cargo xtask lab --down`"
        );
    }
    Netns::create(name)
}
