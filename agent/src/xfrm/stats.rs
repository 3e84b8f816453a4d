//! `/proc/net/xfrm_stat`: the kernel's XFRM error counters (per network namespace). Only a
//! fixed list is exported, so metric labels stay bounded whatever the kernel adds.

/// (kernel name, label value, what it means) of the exported counters: the failure modes
/// IPsec troubleshooting starts from.
pub const COUNTERS: [(&str, &str, &str); 12] = [
    (
        "XfrmInNoStates",
        "in_no_states",
        "inbound ESP with an SPI the kernel has no SA for (the peer uses an SA this side no longer has)",
    ),
    (
        "XfrmInStateProtoError",
        "in_state_proto_error",
        "transform error on an inbound SA (e.g. ESP decryption failed: key mismatch)",
    ),
    (
        "XfrmInStateSeqError",
        "in_state_seq_error",
        "inbound sequence number out of the replay window",
    ),
    (
        "XfrmInStateExpired",
        "in_state_expired",
        "inbound packet for an expired SA",
    ),
    (
        "XfrmInStateMismatch",
        "in_state_mismatch",
        "inbound SA does not match the packet's selector",
    ),
    (
        "XfrmInStateInvalid",
        "in_state_invalid",
        "inbound SA not valid (e.g. being deleted)",
    ),
    (
        "XfrmInNoPols",
        "in_no_pols",
        "decrypted inbound packet matched no policy",
    ),
    (
        "XfrmInPolBlock",
        "in_pol_block",
        "inbound packet blocked by policy",
    ),
    (
        "XfrmInTmplMismatch",
        "in_tmpl_mismatch",
        "inbound packet did not match the policy's template",
    ),
    (
        "XfrmOutNoStates",
        "out_no_states",
        "outbound packet matched a policy but there is no SA for it",
    ),
    (
        "XfrmOutStateProtoError",
        "out_state_proto_error",
        "transform error on an outbound SA",
    ),
    (
        "XfrmOutPolBlock",
        "out_pol_block",
        "outbound packet blocked by policy",
    ),
];

/// Reads the exported counters: (label value, count), in [`COUNTERS`] order. `None` when the
/// file is missing (kernel without CONFIG_XFRM_STATISTICS).
pub fn read() -> Option<Vec<(&'static str, u64)>> {
    std::fs::read_to_string("/proc/net/xfrm_stat")
        .ok()
        .map(|t| parse(&t))
}

pub fn parse(text: &str) -> Vec<(&'static str, u64)> {
    COUNTERS
        .iter()
        .map(|(name, label, _)| {
            let v = text
                .lines()
                .find_map(|l| {
                    let mut it = l.split_whitespace();
                    (it.next() == Some(*name)).then(|| it.next()?.parse().ok())?
                })
                .unwrap_or(0);
            (*label, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_kernel_format() {
        let text = "XfrmInError             \t0\nXfrmInNoStates          \t17\nXfrmOutNoStates \t3\nXfrmFutureCounter 9\n";
        let c = super::parse(text);
        assert_eq!(c.len(), super::COUNTERS.len());
        assert!(c.contains(&("in_no_states", 17)));
        assert!(c.contains(&("out_no_states", 3)));
        assert!(c.contains(&("in_state_proto_error", 0)));
    }
}
