//! Weighted slot tables, a pure function of the active gateways.
//!
//! [`fill`] turns a set of active gateways with weights into the `ROUTER_SLOTS` (4096) entries
//! the data plane indexes with a flow hash. Properties (checked by the tests below):
//!
//! * **Independent of history.** The table depends only on the active gateways, their
//!   weights and their [`placement`] keys (hashes of their names), not on the table before
//!   it, the order of `active` or gateway ids: after a gateway fails and returns every slot
//!   is back where it was, and two boxes with the same configuration and health agree.
//! * **Exact quotas.** Gateway `i` gets `floor(x_i)` or `ceil(x_i)` slots, where
//!   `x_i = ROUTER_SLOTS * w_i / Σw` is its exact share: within one slot (0.025 %). The
//!   gateways that get the ceiling are those with the largest remainders (ties: placement).
//! * **Near-minimal disruption** (Maglev, Eisenbud et al., NSDI 2016): every gateway walks its
//!   own pseudo-random permutation of the slots and takes the next free one on each of its
//!   turns; turns go in the order of `(k + ½) / w_i` (the k-th turn of gateway `i`), an order
//!   that does not depend on the other gateways. When a gateway leaves or returns, its slots
//!   move, and a few others with them: the collisions of the walks differ. Measured over
//!   random sets (`bench_disruption`): on average 0.25 % (3 gateways) to 2.4 % (64 gateways)
//!   of the table beyond the gateway's own share, at worst 2.05 % for up to 16 gateways and
//!   3.5 % for 64; the tests hold [`EXTRA_MOVES_BOUND`] for up to 16. A table computed from the previous one could move only the gateway's
//!   share, but would then depend on the order of past failures (the issue this replaced).
//! * **Spread.** A gateway's slots are scattered over the table by its permutation.
//! * **Cost.** About `ROUTER_SLOTS × ln(ROUTER_SLOTS / 64)` permutation steps (three
//!   dependent multiplications and a branch that mispredicts) plus a scan of the free slots'
//!   ranks for the last 64 turns: 80–120 µs a table of 2–4 gateways on the development
//!   machine, against 8 µs for the history-dependent table it replaced. One gateway takes
//!   every slot without a walk. `bench.rs` measures it (`cargo xtask bench -- --agent-only`).
//!
//! What a reader may change: the permutation and the hash of [`placement`] (every table
//! changes once, on upgrade), as long as the tests hold. What must not change without the
//! data plane: the table length (`ROUTER_SLOTS`, a power of two, indexed by
//! `hash & (SLOTS - 1)`).

use xwan_common::maps::ROUTER_SLOTS;

use super::Member;

/// Slots that may move between the other gateways when one gateway of up to 16 leaves or
/// returns, beyond the ones it gives up or takes back: 3 % of the table (measured worst
/// case: 84 slots, 2.05 %, 16 gateways over 200 random sets).
pub const EXTRA_MOVES_BOUND: usize = ROUTER_SLOTS * 3 / 100;

/// The placement key of a gateway named `name`: FNV-1a 64 with a SplitMix64 finish, written
/// out here so that it never changes with the Rust release (std's hasher may).
pub fn placement(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in name.as_bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const BITS: u32 = ROUTER_SLOTS.trailing_zeros();
const MASK: u32 = ROUTER_SLOTS as u32 - 1;
const FREE: u16 = u16::MAX;

/// A gateway's permutation of the slots, keyed by its placement: three rounds of xor, odd
/// multiplication and xor-shift on `BITS` bits, each a bijection of the slot indexes.
struct Perm {
    xor: [u32; 3],
    mul: [u32; 3],
    /// `mul`'s inverses modulo `ROUTER_SLOTS`, for [`Perm::rank`].
    inv: [u32; 3],
}

impl Perm {
    fn new(seed: u64) -> Perm {
        let mut p = Perm {
            xor: [0; 3],
            mul: [0; 3],
            inv: [0; 3],
        };
        let mut s = seed;
        for r in 0..3 {
            p.xor[r] = s as u32 & MASK;
            let m = (s >> BITS) as u32 | 1;
            p.mul[r] = m & MASK;
            // Newton's iteration doubles the correct low bits of an odd number's inverse
            // (m is its own inverse modulo 8): 3 → 6 → 12 bits.
            let mut y = m;
            for _ in 0..2 {
                y = y.wrapping_mul(2u32.wrapping_sub(m.wrapping_mul(y)));
            }
            p.inv[r] = y & MASK;
            s = s.rotate_right(24);
        }
        p
    }

    /// The `k`-th slot of the walk.
    fn at(&self, k: u32) -> usize {
        let mut x = k & MASK;
        for r in 0..3 {
            x ^= self.xor[r];
            x = x.wrapping_mul(self.mul[r]) & MASK;
            x ^= x >> (BITS / 2);
        }
        x as usize
    }

    /// Where `slot` comes in the walk: the inverse of [`Perm::at`] (a xor-shift by half the
    /// width or more is its own inverse).
    fn rank(&self, slot: usize) -> u32 {
        let mut x = slot as u32 & MASK;
        for r in (0..3).rev() {
            x ^= x >> (BITS / 2);
            x = x.wrapping_mul(self.inv[r]) & MASK;
            x ^= self.xor[r];
        }
        x
    }
}

/// Fills a table of `ROUTER_SLOTS` slots for the `active` gateways. A gateway listed twice
/// counts once, with the sum of its weights. No active gateway gives an empty `Vec`: the
/// data plane then applies the router's `on_failure`.
pub fn fill(active: &[Member]) -> Vec<u16> {
    fill_with_quotas(active).0
}

/// [`fill`], also returning each gateway's slot count (sorted by gateway id).
pub(crate) fn fill_with_quotas(active: &[Member]) -> (Vec<u16>, Vec<(u16, usize)>) {
    // (placement, gateway, weight): sorted by placement, duplicates merged.
    let mut gws: Vec<(u64, u16, u64)> = (active.iter())
        .map(|m| (m.placement, m.gateway, u64::from(m.weight.get())))
        .collect();
    gws.sort_unstable_by_key(|g| g.1);
    gws.dedup_by(|b, a| {
        let same = a.1 == b.1;
        a.2 += if same { b.2 } else { 0 };
        same
    });
    gws.sort_unstable();
    if gws.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let quota = quotas(&gws);
    let mut counts: Vec<(u16, usize)> = gws.iter().zip(&quota).map(|(g, &q)| (g.1, q)).collect();
    counts.sort_unstable();
    let out = match gws[..] {
        [(_, g, _)] => vec![g; ROUTER_SLOTS],
        _ => walk(&gws, &quota),
    };
    (out, counts)
}

/// Slot counts by largest remainder (Hamilton): `floor(x_i)` each, plus one for the gateways
/// with the largest fractional parts, ties to the lower placement.
fn quotas(gws: &[(u64, u16, u64)]) -> Vec<usize> {
    let total: u64 = gws.iter().map(|g| g.2).sum();
    let n = ROUTER_SLOTS as u64;
    let mut quota: Vec<usize> = gws.iter().map(|g| (n * g.2 / total) as usize).collect();
    let extra = ROUTER_SLOTS.saturating_sub(quota.iter().sum());
    let mut by_remainder: Vec<usize> = (0..gws.len()).collect();
    by_remainder.sort_by_key(|&i| (std::cmp::Reverse(n * gws[i].2 % total), i));
    for &i in &by_remainder[..extra] {
        quota[i] += 1;
    }
    quota
}

/// Free slots below which a turn looks up the ranks of the free slots in its walk rather
/// than walking: `ROUTER_SLOTS / free` steps against `free` ranks cross at √ROUTER_SLOTS. The
/// same slot either way (every slot earlier in the walk is taken); the last 64 turns would
/// otherwise cost half of all the steps.
const TAIL: usize = 64;

/// The Maglev walk: turns in `(k + ½) / w` order, each taking the next free slot of the
/// gateway's permutation.
fn walk(gws: &[(u64, u16, u64)], quota: &[usize]) -> Vec<u16> {
    let perms: Vec<Perm> = gws.iter().map(|g| Perm::new(g.0)).collect();
    let mut out = [FREE; ROUTER_SLOTS];
    let mut next = vec![0u32; gws.len()];
    let mut free = ROUTER_SLOTS;
    let mut tail: Vec<usize> = Vec::new();
    for_each_turn(gws, quota, |i| {
        let (perm, g) = (&perms[i], gws[i].1);
        if free > TAIL {
            loop {
                let p = perm.at(next[i]);
                next[i] += 1;
                if out[p] == FREE {
                    out[p] = g;
                    break;
                }
            }
        } else {
            if tail.is_empty() {
                tail = (0..ROUTER_SLOTS).filter(|&p| out[p] == FREE).collect();
            }
            let (j, rank) = (tail.iter().enumerate())
                .map(|(j, &p)| (j, perm.rank(p)))
                .min_by_key(|&(_, r)| r)
                .expect("a turn for every free slot");
            out[tail.swap_remove(j)] = g;
            next[i] = rank + 1;
        }
        free -= 1;
    });
    out.to_vec()
}

/// Calls `turn` with the index of each gateway taking a turn, `quota[i]` times each, in the
/// order of the turns' times `(2k + 1) / 2w` (k-th turn, weight w), ties to the lower index
/// (placement). Times are compared as fractions, by multiplication (2k + 1 < 2^13 and
/// w < 2^32: no overflow in u64); a division per turn cost more than the walk.
fn for_each_turn(gws: &[(u64, u16, u64)], quota: &[usize], mut turn: impl FnMut(usize)) {
    use std::{cmp::Reverse, collections::BinaryHeap};
    let mut due: Vec<Due> = (gws.iter().enumerate())
        .map(|(i, g)| Due { k: 0, w: g.2, i })
        .collect();
    if gws.len() <= 16 {
        // A few gateways: a scan of their next turns beats a heap's bookkeeping.
        for _ in 0..ROUTER_SLOTS {
            let mut i = usize::MAX;
            for (j, d) in due.iter().enumerate() {
                if (d.k as usize) < quota[j] && (i == usize::MAX || *d < due[i]) {
                    i = j;
                }
            }
            turn(i);
            due[i].k += 1;
        }
        return;
    }
    let mut heap: BinaryHeap<Reverse<Due>> = (due.drain(..))
        .filter(|d| quota[d.i] > 0)
        .map(Reverse)
        .collect();
    while let Some(Reverse(mut d)) = heap.pop() {
        turn(d.i);
        d.k += 1;
        if (d.k as usize) < quota[d.i] {
            heap.push(Reverse(d));
        }
    }
}

/// A gateway's next turn: its `k`-th, at time `(2k + 1) / 2w`.
#[derive(PartialEq, Eq)]
struct Due {
    k: u64,
    w: u64,
    i: usize,
}

impl Ord for Due {
    fn cmp(&self, o: &Due) -> std::cmp::Ordering {
        ((2 * self.k + 1) * o.w)
            .cmp(&((2 * o.k + 1) * self.w))
            .then(self.i.cmp(&o.i))
    }
}

impl PartialOrd for Due {
    fn partial_cmp(&self, o: &Due) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// One bit per slot of a table, slot `s` at bit `s % 64` of word `s / 64`.
const WORDS: usize = ROUTER_SLOTS / 64;
type Bitmap = [u64; WORDS];

/// Number of distinct gateways in `table` (0 unless `ROUTER_SLOTS` long): one SIMD pass per
/// gateway found, where a per-slot bitset costs about 3 µs a table (a verdict converts
/// dozens).
pub(crate) fn distinct(table: &[u16]) -> usize {
    if table.len() != ROUTER_SLOTS {
        return 0;
    }
    let mut uncovered: Bitmap = [!0u64; WORDS];
    let mut n = 0;
    while let Some(w) = uncovered.iter().position(|&x| x != 0) {
        let first = w * 64 + uncovered[w].trailing_zeros() as usize;
        for (u, b) in uncovered.iter_mut().zip(positions(table, table[first])) {
            *u &= !b;
        }
        n += 1;
    }
    n
}

/// The slots of `table` (`ROUTER_SLOTS` long) holding gateway `g`.
fn positions(table: &[u16], g: u16) -> Bitmap {
    #[cfg(target_arch = "x86_64")]
    return positions_sse2(table, g);
    #[cfg(not(target_arch = "x86_64"))]
    return positions_portable(table, g);
}

/// [`positions`] with SSE2 (part of every x86-64): 16 slots per compare and mask, about 10×
/// faster than the portable version, which LLVM does not vectorise.
#[cfg(target_arch = "x86_64")]
fn positions_sse2(table: &[u16], g: u16) -> Bitmap {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi16, _mm_loadu_si128, _mm_movemask_epi8, _mm_packs_epi16,
        _mm_set1_epi16,
    };
    assert_eq!(table.len(), ROUTER_SLOTS);
    let mut out = [0u64; WORDS];
    // SAFETY: SSE2 is in the x86-64 baseline; every load reads 8 slots inside `table`
    // (chunks of 64 slots, offsets 0..64 step 8), unaligned loads allowed.
    unsafe {
        let gv = _mm_set1_epi16(g as i16);
        for (w, chunk) in out.iter_mut().zip(table.chunks_exact(64)) {
            let p = chunk.as_ptr().cast::<__m128i>();
            for k in 0..4 {
                let lo = _mm_cmpeq_epi16(_mm_loadu_si128(p.add(2 * k)), gv);
                let hi = _mm_cmpeq_epi16(_mm_loadu_si128(p.add(2 * k + 1)), gv);
                // Compare results are 0 or -1: packing to bytes keeps them, one bit per slot.
                let bits = _mm_movemask_epi8(_mm_packs_epi16(lo, hi)) as u16;
                *w |= u64::from(bits) << (16 * k);
            }
        }
    }
    out
}

/// [`positions`] without SIMD: 0/1 bytes, gathered 8 at a time by a multiplication.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn positions_portable(table: &[u16], g: u16) -> Bitmap {
    assert_eq!(table.len(), ROUTER_SLOTS);
    let mut out = [0u64; WORDS];
    for (w, chunk) in out.iter_mut().zip(table.chunks_exact(64)) {
        for (k, oct) in chunk.chunks_exact(8).enumerate() {
            let mut bytes = [0u8; 8];
            for (b, &x) in bytes.iter_mut().zip(oct) {
                *b = u8::from(x == g);
            }
            // Byte i (0 or 1) lands on bit 56 + i of the product.
            let gathered = u64::from_le_bytes(bytes).wrapping_mul(0x0102_0408_1020_4080) >> 56;
            *w |= gathered << (8 * k);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Members named `gw<id>`.
    fn set(active: &[(u16, u32)]) -> Vec<Member> {
        (active.iter())
            .map(|&(g, w)| Member::new(&format!("gw{g}"), g, w).unwrap())
            .collect()
    }

    fn counts(slots: &[u16]) -> BTreeMap<u16, usize> {
        let mut m = BTreeMap::new();
        for &g in slots {
            *m.entry(g).or_insert(0) += 1;
        }
        m
    }

    /// Every gateway's count is floor or ceil of its exact share.
    fn assert_quotas(slots: &[u16], active: &[(u16, u32)]) {
        let mut w: BTreeMap<u16, u64> = BTreeMap::new();
        for &(g, x) in active {
            *w.entry(g).or_insert(0) += u64::from(x);
        }
        let total: u64 = w.values().sum();
        if total == 0 {
            assert!(slots.is_empty());
            return;
        }
        assert_eq!(slots.len(), ROUTER_SLOTS);
        let c = counts(slots);
        for (&g, &x) in &w {
            let got = *c.get(&g).unwrap_or(&0) as u64;
            let num = ROUTER_SLOTS as u64 * x;
            let (lo, hi) = (num / total, num.div_ceil(total));
            assert!(
                lo <= got && got <= hi,
                "gateway {g}: {got} slots, exact share {num}/{total}"
            );
        }
        assert!(c.keys().all(|g| w.contains_key(g)), "{c:?} vs {w:?}");
    }

    /// Slots that changed hands, other than those `g` gave up or took.
    fn others_moved(a: &[u16], b: &[u16], g: u16) -> usize {
        (a.iter().zip(b))
            .filter(|&(x, y)| x != y && *x != g && *y != g)
            .count()
    }

    #[test]
    fn empty_and_single() {
        assert!(fill(&[]).is_empty());
        assert_eq!(fill(&set(&[(7, 3)])), vec![7; ROUTER_SLOTS]);
        assert_eq!(fill(&set(&[(7, 3), (7, 1)])), vec![7; ROUTER_SLOTS]);
    }

    #[test]
    fn seed_83_17() {
        let t = fill(&set(&[(1, 50), (3, 10)]));
        // 4096 * 50/60 = 3413.33, 4096 * 10/60 = 682.67.
        let c = counts(&t);
        assert_eq!((c[&1], c[&3]), (3413, 683));
        // Spread: every 512-slot eighth of the table holds WAN3's share within 40 %.
        for part in t.chunks(ROUTER_SLOTS / 8) {
            let n = part.iter().filter(|&&g| g == 3).count();
            assert!((51..=120).contains(&n), "{n} of WAN3's slots in an eighth");
        }
    }

    /// Pinned: the placement hash and the walk are part of what two boxes (or two releases)
    /// must agree on. Changing either moves every flow once: update these on purpose only.
    #[test]
    fn placement_and_walk_are_pinned() {
        assert_eq!(placement(""), mix(0xcbf2_9ce4_8422_2325));
        assert_eq!(placement("WAN1"), 0x868b_f419_73ca_7dd7);
        let t = fill(&set(&[(1, 50), (3, 10)]));
        let wan3: Vec<usize> = (0..ROUTER_SLOTS).filter(|&s| t[s] == 3).take(8).collect();
        assert_eq!(wan3, [21, 26, 32, 35, 43, 54, 61, 67]);
    }

    #[test]
    fn order_ids_and_duplicates_do_not_matter() {
        let a = fill(&set(&[(1, 50), (3, 10), (2, 5)]));
        assert_eq!(a, fill(&set(&[(3, 10), (2, 5), (1, 50)])));
        assert_eq!(a, fill(&set(&[(3, 4), (2, 5), (1, 50), (3, 6)])));
        // The same gateways under other ids (a reload that reorders the file): the same
        // slots, under the new ids.
        let renumbered: Vec<Member> = (set(&[(1, 50), (3, 10), (2, 5)]).into_iter())
            .map(|m| Member {
                gateway: m.gateway + 100,
                ..m
            })
            .collect();
        let b = fill(&renumbered);
        assert!(a.iter().zip(&b).all(|(x, y)| x + 100 == *y));
    }

    /// The measurement: four gateways weighted 3/2/1/1, 400 sources. GW2 fails:
    /// its sources move, and a few others; it returns: every source is back.
    #[test]
    fn a_failure_and_recovery_puts_every_source_back() {
        let all = [(1, 3), (2, 2), (3, 1), (4, 1)];
        let before = fill(&set(&all));
        let during = fill(&set(&[(1, 3), (3, 1), (4, 1)]));
        let after = fill(&set(&all));
        assert_eq!(before, after);
        let slot = |src: u32| (src.wrapping_mul(2_654_435_761) >> 20) as usize % ROUTER_SLOTS;
        let on = |t: &[u16], src| t[slot(src)];
        let moved_others = (0..400)
            .filter(|&s| on(&before, s) != 2 && on(&before, s) != on(&during, s))
            .count();
        assert!(
            moved_others <= 400 * 3 / 100,
            "{moved_others} sources not on GW2 moved"
        );
        assert!((0..400).all(|s| on(&during, s) != 2));
    }

    #[test]
    fn distinct_counts_gateways() {
        assert_eq!(distinct(&[]), 0);
        assert_eq!(distinct(&[1, 2]), 0);
        assert_eq!(distinct(&vec![7; ROUTER_SLOTS]), 1);
        let t = fill(&set(&[(1, 50), (3, 10), (900, 1)]));
        assert_eq!(distinct(&t), 3);
        let many: Vec<(u16, u32)> = (0..40).map(|g| (g * 20, 1)).collect();
        assert_eq!(distinct(&fill(&set(&many))), 40);
    }

    #[test]
    fn positions_mark_exactly_the_gateways_slots() {
        let table: Vec<u16> = (0..ROUTER_SLOTS as u32)
            .map(|s| (s.wrapping_mul(2_654_435_761) >> 29) as u16)
            .collect();
        for g in 0..9 {
            let b = positions(&table, g);
            assert_eq!(b, positions_portable(&table, g), "gateway {g}");
            for (s, &x) in table.iter().enumerate() {
                assert_eq!(
                    b[s / 64] >> (s % 64) & 1 == 1,
                    x == g,
                    "slot {s}, gateway {g}"
                );
            }
        }
    }

    #[test]
    fn permutations_are_bijections() {
        for seed in [0, 1, placement("WAN1"), u64::MAX] {
            let mut seen = vec![false; ROUTER_SLOTS];
            let perm = Perm::new(seed);
            for k in 0..ROUTER_SLOTS as u32 {
                let p = perm.at(k);
                assert_eq!(perm.rank(p), k, "seed {seed:#x}: rank of slot {p}");
                assert!(!seen[p], "seed {seed:#x}: slot {p} twice");
                seen[p] = true;
            }
        }
    }

    fn active_set(max: usize) -> impl Strategy<Value = Vec<(u16, u32)>> {
        // Distinct ids, weights 1..=1000 (a few 1..=3 to get tiny shares too).
        proptest::collection::btree_map(0u16..64, prop_oneof![1u32..=1000, 1u32..=3], 1..max)
            .prop_map(|m| m.into_iter().collect())
    }

    proptest! {
        #[test]
        fn quotas_are_exact(active in active_set(17)) {
            assert_quotas(&fill(&set(&active)), &active);
        }

        #[test]
        fn one_change_moves_its_share_and_a_bounded_few(
            active in active_set(17),
            pick in any::<prop::sample::Index>(),
        ) {
            let before = fill(&set(&active));
            let gone = active[pick.index(active.len())].0;
            let rest: Vec<_> = active.iter().copied().filter(|&(g, _)| g != gone).collect();
            let after = fill(&set(&rest));
            assert_quotas(&after, &rest);
            // Leaving and returning are the same pair of tables, read both ways.
            let extra = others_moved(&before, &after, gone);
            prop_assert!(extra <= EXTRA_MOVES_BOUND, "{} other slots moved", extra);
        }

        #[test]
        fn any_history_ending_in_one_set_gives_one_table(
            active in active_set(10),
            steps in proptest::collection::vec(any::<prop::sample::Index>(), 1..12),
        ) {
            let mut up: Vec<bool> = vec![true; active.len()];
            let mut tables = Vec::new();
            for s in steps {
                let i = s.index(active.len());
                up[i] = !up[i];
                let now: Vec<_> = (active.iter().zip(&up)).filter(|(_, u)| **u).map(|(a, _)| *a).collect();
                tables.push((up.clone(), fill(&set(&now))));
            }
            // Whenever the same usable set came back, so did the same table.
            for (u, t) in &tables {
                for (v, x) in &tables {
                    if u == v {
                        prop_assert_eq!(t, x);
                    }
                }
            }
        }
    }
}
