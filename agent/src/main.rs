//! `xwan`: the agent binary.

fn main() {
    eprintln!(
        "xwan {}: the agent commands arrive with the agent issue; the data-plane library is in `xwan::datapath`.",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
