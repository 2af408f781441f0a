//! Router state: duplicate suppression, preferred paths back to senders, the pre-link queue,
//! and next-hop selection.
//!
//! Every structure here is bounded by a [`Config`](crate::Config) field. Hash maps are keyed
//! with a seed from the node's RNG (never the OS), and are only ever probed, never iterated
//! into outputs, so determinism holds.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::time::Duration;

use foldhash::fast::FixedState;
use smallvec::SmallVec;

use crate::id::{Distance, PeerId};
use crate::time::Time;
use crate::wire::Nonce;

/// When a two-generation cache moves its current generation to the previous one: on a fixed
/// grid of half-TTL epochs, or early when the current generation holds half the bound. An
/// entry therefore lives between half the TTL and the TTL, and the two generations together
/// never hold more than the bound. No per-entry timestamps, no eviction queue: one probe per
/// generation, and memory returns when a generation is dropped.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
struct Rotation {
    epoch: u64,
    half_ttl_micros: u64,
    half_max: usize,
}

/// What a lookup at `now` must do with the generations first.
enum Shift {
    None,
    /// Current becomes previous.
    One,
    /// Both are older than the TTL.
    Both,
}

impl Rotation {
    fn new(max: usize, ttl: Duration) -> Self {
        let half_ttl_micros = u64::try_from(ttl.as_micros() / 2)
            .unwrap_or(u64::MAX)
            .max(1);
        Rotation {
            epoch: 0,
            half_ttl_micros,
            // Each generation holds at most half: together never more than `max` (an odd
            // `max` rounds down; `Config::validate` refuses 1).
            half_max: (max / 2).max(1),
        }
    }

    fn epoch_of(&self, now: Time) -> u64 {
        now.as_micros() / self.half_ttl_micros
    }

    fn due(&mut self, now: Time, current_len: usize) -> Shift {
        let epoch = self.epoch_of(now).max(self.epoch);
        let shift = if epoch >= self.epoch + 2 {
            Shift::Both
        } else if epoch == self.epoch + 1 || current_len >= self.half_max {
            Shift::One
        } else {
            Shift::None
        };
        self.epoch = epoch;
        shift
    }

    /// Whether entries of the current (and the previous) generation are still valid at `now`.
    fn valid(&self, now: Time) -> (bool, bool) {
        let epoch = self.epoch_of(now);
        (epoch <= self.epoch + 1, epoch <= self.epoch)
    }
}

/// A hasher for keys that already are keyed hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A nonce as [`SeenNonces`] stores it: 48 bits of a keyed hash, in 6 bytes. A false
/// duplicate needs a 48-bit collision under a key only this node knows: with the few
/// thousand nonces a busy node remembers, about one message in 10^11 per hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
struct NonceKey([u8; 6]);

impl NonceKey {
    fn new(hash: u64) -> Self {
        let bytes = hash.to_le_bytes();
        NonceKey([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5]])
    }
}

impl std::hash::Hash for NonceKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let [a, b, c, d, e, f] = self.0;
        let bits = u64::from_le_bytes([a, b, c, d, e, f, 0, 0]);
        // The table takes its probe position from the low bits and its tag from the top
        // seven, which 48 bits leave zero: an odd multiplier spreads them up.
        state.write_u64(bits.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
}

/// A keyed hash: foldhash's fixed hasher under a seed only this node knows. Holds the seed
/// itself (building the hasher from it is one XOR), so a snapshot can save it.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
struct Keyer(u64);

impl Keyer {
    fn hash_one(&self, value: impl std::hash::Hash) -> u64 {
        FixedState::with_seed(self.0).hash_one(value)
    }
}

type HashedSet = HashSet<NonceKey, BuildHasherDefault<PassThrough>>;

/// Nonces seen recently, bounded by count and by age, stored as 48-bit keyed hashes
/// (`NonceKey`): 7 bytes of table per nonce.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub struct SeenNonces {
    current: HashedSet,
    previous: HashedSet,
    rotation: Rotation,
    keyer: Keyer,
}

impl SeenNonces {
    /// A cache of at most `max` nonces, each kept between `ttl / 2` and `ttl`.
    pub fn new(max: usize, ttl: Duration, hash_seed: u64) -> Self {
        SeenNonces {
            current: HashedSet::default(),
            previous: HashedSet::default(),
            rotation: Rotation::new(max, ttl),
            keyer: Keyer(hash_seed),
        }
    }

    fn key(&self, nonce: &Nonce) -> NonceKey {
        NonceKey::new(self.keyer.hash_one(nonce.key()))
    }

    /// Records `nonce`; false if it was already there (a duplicate).
    pub fn insert(&mut self, now: Time, nonce: &Nonce) -> bool {
        match self.rotation.due(now, self.current.len()) {
            Shift::None => {}
            Shift::One => self.previous = std::mem::take(&mut self.current),
            Shift::Both => {
                self.previous = HashedSet::default();
                self.current = HashedSet::default();
            }
        }
        let key = self.key(nonce);
        if self.previous.contains(&key) {
            return false;
        }
        self.current.insert(key)
    }

    /// Whether `nonce` is remembered.
    pub fn contains(&self, nonce: &Nonce) -> bool {
        let key = self.key(nonce);
        self.current.contains(&key) || self.previous.contains(&key)
    }

    /// Number of nonces remembered.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A sender as [`PreferredPaths`] stores it: a 64-bit keyed hash of its id (a wrong hit needs
/// a 64-bit collision under a key only this node knows). Kept as bytes so that an entry,
/// with its [`HopIndex`], is 10 bytes: on a busy node this table is the largest structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
struct SenderKey([u8; 8]);

impl std::hash::Hash for SenderKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from_ne_bytes(self.0));
    }
}

/// A hop's place in [`Hops`].
type HopIndex = u16;

/// Unused hops [`PreferredPaths`] tolerates before renumbering.
const HOPS_SLACK: usize = 64;

type PathMap = HashMap<SenderKey, HopIndex, BuildHasherDefault<PassThrough>>;

/// The links preferred paths lead to, each id stored once: thousands of entries share a few
/// dozen hops, so an entry holds a 2-byte index instead of a 20-byte id.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
struct Hops {
    /// Index -> id.
    ids: Vec<PeerId>,
    /// Indices ordered by id, for lookup.
    by_id: Vec<HopIndex>,
    /// The hop interned last: a discovery reply introduces its ids all through one link.
    last: Option<(PeerId, HopIndex)>,
}

impl Hops {
    /// The index of `hop`, added if new; `None` when all 65,536 indices are taken (the two
    /// generations name that many distinct links, and the entry is not recorded).
    fn intern(&mut self, hop: PeerId) -> Option<HopIndex> {
        if let Some((id, index)) = self.last {
            if id == hop {
                return Some(index);
            }
        }
        let ids = &self.ids;
        let index = match self
            .by_id
            .binary_search_by(|&i| ids[usize::from(i)].cmp(&hop))
        {
            Ok(at) => self.by_id[at],
            Err(at) => {
                let index = HopIndex::try_from(self.ids.len()).ok()?;
                self.ids.push(hop);
                self.by_id.insert(at, index);
                index
            }
        };
        self.last = Some((hop, index));
        Some(index)
    }

    fn get(&self, index: HopIndex) -> PeerId {
        self.ids[usize::from(index)]
    }

    /// Keeps only the hops the generations use, renumbering their entries.
    fn retain_used_by(&mut self, generations: [&mut PathMap; 2]) {
        let mut renumber: Vec<Option<HopIndex>> = vec![None; self.ids.len()];
        let mut ids = Vec::new();
        for index in generations.into_iter().flat_map(|paths| paths.values_mut()) {
            let new = *renumber[usize::from(*index)].get_or_insert_with(|| {
                ids.push(self.ids[usize::from(*index)]);
                // Fewer used hops than before, so the new index fits.
                HopIndex::try_from(ids.len() - 1).unwrap_or(HopIndex::MAX)
            });
            *index = new;
        }
        ids.shrink_to_fit();
        let mut by_id: Vec<HopIndex> = (0..=HopIndex::MAX).take(ids.len()).collect();
        by_id.sort_unstable_by_key(|&i| ids[usize::from(i)]);
        self.ids = ids;
        self.by_id = by_id;
        self.last = None;
    }
}

/// For recent senders, the link their message arrived on: replies go back that way. Bounded
/// by count and by age (a reply follows its request within seconds).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub struct PreferredPaths {
    current: PathMap,
    previous: PathMap,
    hops: Hops,
    rotation: Rotation,
    keyer: Keyer,
    enabled: bool,
}

impl PreferredPaths {
    /// A table of at most `max` senders (`0` disables it), each kept between `ttl / 2` and
    /// `ttl`.
    pub fn new(max: usize, ttl: Duration, hash_seed: u64) -> Self {
        PreferredPaths {
            current: PathMap::default(),
            previous: PathMap::default(),
            hops: Hops::default(),
            rotation: Rotation::new(max, ttl),
            keyer: Keyer(hash_seed),
            enabled: max > 0,
        }
    }

    fn key(&self, sender: &PeerId) -> SenderKey {
        SenderKey(self.keyer.hash_one(sender).to_ne_bytes())
    }

    /// Remembers that `sender`'s latest message arrived over the link to `hop`.
    pub fn insert(&mut self, now: Time, sender: PeerId, hop: PeerId) {
        if !self.enabled {
            return;
        }
        let renumber = match self.rotation.due(now, self.current.len()) {
            // Entries rewritten with other hops leave unused hops behind; past this slack
            // they are dropped, so the hops never outnumber twice the entries by more.
            Shift::None => self.hops.ids.len() > 2 * self.len() + HOPS_SLACK,
            Shift::One => {
                self.previous = std::mem::take(&mut self.current);
                true
            }
            Shift::Both => {
                self.previous = PathMap::default();
                self.current = PathMap::default();
                self.hops = Hops::default();
                false
            }
        };
        if renumber {
            self.hops
                .retain_used_by([&mut self.previous, &mut self.current]);
        }
        let Some(index) = self.hops.intern(hop) else {
            return;
        };
        let key = self.key(&sender);
        self.current.insert(key, index);
    }

    /// The link `sender`'s latest message arrived over, if recent.
    pub fn get(&self, now: Time, sender: &PeerId) -> Option<PeerId> {
        let (current_valid, previous_valid) = self.rotation.valid(now);
        if !current_valid || self.is_empty() {
            return None;
        }
        let key = self.key(sender);
        let current = self.current.get(&key);
        let previous = || previous_valid.then(|| self.previous.get(&key)).flatten();
        current.or_else(previous).map(|&index| self.hops.get(index))
    }

    /// Number of senders remembered.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A message originated while no link existed, waiting for the first one.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub struct Queued {
    /// Recipient.
    pub to: PeerId,
    /// The payload's type.
    pub kind: crate::wire::PayloadKind,
    /// Nonce, already recorded as seen.
    pub nonce: Nonce,
    /// Payload JSON.
    pub payload: String,
}

/// The original's rule: the target itself if linked; otherwise the `concurrency` closest links
/// not on the path, with the link closest to the preferred hop put first.
pub fn spread_hops(
    to: &PeerId,
    closest: impl Iterator<Item = PeerId>,
    preferred: Option<PeerId>,
    on_path: impl Fn(&PeerId) -> bool,
    concurrency: usize,
) -> SmallVec<[PeerId; 4]> {
    let mut hops: SmallVec<[PeerId; 4]> = SmallVec::new();
    for peer in closest {
        if peer == *to {
            // Direct delivery: the original means to stop here too (its check compares a
            // string with a Buffer and never matches at relays).
            hops.clear();
            hops.push(peer);
            return hops;
        }
        if hops.len() < concurrency && !on_path(&peer) {
            hops.push(peer);
        }
        if hops.len() >= concurrency {
            break;
        }
    }
    if let Some(preferred) = preferred {
        if !hops.contains(&preferred) && !on_path(&preferred) {
            hops.insert(0, preferred);
        }
    }
    hops
}

/// Greedy forwarding: one copy to the link closest to `to` when it is closer than we are;
/// `concurrency` copies to the closest links off the path when no link makes progress (a
/// local minimum, where our view of the network may be incomplete). A preferred hop (the
/// link the target's own messages arrive on) wins when it is usable, so replies retrace.
pub fn greedy_hops(
    own_distance: Distance,
    to: &PeerId,
    closest: impl Iterator<Item = PeerId>,
    preferred: Option<PeerId>,
    on_path: impl Fn(&PeerId) -> bool,
    concurrency: usize,
) -> SmallVec<[PeerId; 4]> {
    let mut hops: SmallVec<[PeerId; 4]> = SmallVec::new();
    if let Some(preferred) = preferred {
        if !on_path(&preferred) {
            hops.push(preferred);
            return hops;
        }
    }
    for peer in closest {
        if peer == *to {
            hops.clear();
            hops.push(peer);
            return hops;
        }
        if on_path(&peer) {
            continue;
        }
        if hops.is_empty() && peer.distance(to) < own_distance {
            hops.push(peer);
            return hops;
        }
        hops.push(peer);
        if hops.len() >= concurrency {
            break;
        }
    }
    hops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> PeerId {
        let mut b = [0u8; 20];
        b[0] = n;
        PeerId::from_bytes(b)
    }

    fn nonce(n: u64) -> Nonce {
        Nonce::from_u64(n)
    }

    #[test]
    fn seen_nonces_detect_duplicates() {
        let mut seen = SeenNonces::new(10, Duration::from_secs(60), 1);
        assert!(seen.insert(Time::ZERO, &nonce(1)));
        assert!(!seen.insert(Time::ZERO, &nonce(1)));
        assert!(seen.insert(Time::ZERO, &nonce(2)));
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn seen_nonces_bounded_by_count() {
        let mut seen = SeenNonces::new(100, Duration::from_secs(60), 1);
        for n in 0..10_000 {
            seen.insert(Time::ZERO, &nonce(n));
            assert!(seen.len() <= 100);
        }
        assert!(seen.contains(&nonce(9_999)));
        assert!(!seen.contains(&nonce(0)));
    }

    #[test]
    fn odd_bounds_are_never_exceeded() {
        for max in [2, 3, 5, 7, 101] {
            let mut seen = SeenNonces::new(max, Duration::from_secs(60), 1);
            let mut paths = PreferredPaths::new(max, Duration::from_secs(60), 1);
            for n in 0..1_000u64 {
                seen.insert(Time::ZERO, &nonce(n));
                let mut sender = [0u8; 20];
                sender[..8].copy_from_slice(&n.to_be_bytes());
                paths.insert(
                    Time::ZERO,
                    PeerId::from_bytes(sender),
                    PeerId::from_bytes([1; 20]),
                );
                assert!(seen.len() <= max, "{} nonces over {max}", seen.len());
                assert!(paths.len() <= max, "{} paths over {max}", paths.len());
            }
        }
    }

    #[test]
    fn seen_nonces_expire_by_age() {
        let mut seen = SeenNonces::new(100, Duration::from_secs(60), 1);
        seen.insert(Time::ZERO, &nonce(1));
        seen.insert(Time::from_millis(59_000), &nonce(2));
        seen.insert(Time::from_millis(60_000), &nonce(3));
        assert!(!seen.contains(&nonce(1)), "older than the TTL");
        assert!(seen.contains(&nonce(2)));
        assert!(
            seen.insert(Time::from_millis(60_001), &nonce(1)),
            "expired nonce is new again"
        );
        // Everything goes after a long silence.
        assert!(seen.insert(Time::from_millis(200_000), &nonce(9)));
        assert_eq!(seen.len(), 1);
    }

    #[test]
    fn seen_nonces_live_at_least_half_the_ttl() {
        let ttl = Duration::from_secs(60);
        let mut seen = SeenNonces::new(1_000, ttl, 1);
        for at in [0u64, 10_000, 29_999, 30_000, 45_000, 59_999] {
            let t = Time::from_millis(at);
            assert!(seen.insert(t, &nonce(at)));
            assert!(
                !seen.insert(t + Duration::from_millis(29_999), &nonce(at)),
                "{at}"
            );
        }
    }

    #[test]
    fn preferred_paths_bounded_aged_and_latest_wins() {
        let ttl = Duration::from_secs(30);
        let mut p = PreferredPaths::new(4, ttl, 1);
        let t = Time::ZERO;
        p.insert(t, id(1), id(10));
        p.insert(t, id(1), id(11));
        assert_eq!(p.get(t, &id(1)), Some(id(11)));
        for n in 2..50 {
            p.insert(t, id(n), id(10));
            assert!(p.len() <= 4);
        }
        assert_eq!(p.get(t, &id(49)), Some(id(10)));
        assert_eq!(p.get(t, &id(1)), None, "pushed out by count");
        assert_eq!(p.get(t + ttl, &id(49)), None, "older than the TTL");
        assert_eq!(PreferredPaths::new(0, ttl, 1).get(t, &id(1)), None);
    }

    /// The same two generations with each hop stored in full: what interning must match.
    struct PlainPaths {
        current: HashMap<PeerId, PeerId>,
        previous: HashMap<PeerId, PeerId>,
        rotation: Rotation,
    }

    impl PlainPaths {
        fn insert(&mut self, now: Time, sender: PeerId, hop: PeerId) {
            match self.rotation.due(now, self.current.len()) {
                Shift::None => {}
                Shift::One => self.previous = std::mem::take(&mut self.current),
                Shift::Both => {
                    self.previous.clear();
                    self.current.clear();
                }
            }
            self.current.insert(sender, hop);
        }

        fn get(&self, now: Time, sender: &PeerId) -> Option<PeerId> {
            let (current_valid, previous_valid) = self.rotation.valid(now);
            if !current_valid {
                return None;
            }
            let previous = || previous_valid.then(|| self.previous.get(sender)).flatten();
            self.current.get(sender).or_else(previous).copied()
        }
    }

    proptest::proptest! {
        /// Hops stored once and renumbered at each rotation give the same answers as hops
        /// stored in every entry, across rotations by count and by age.
        #[test]
        fn interned_hops_match_plain_entries(
            ops in proptest::collection::vec((0u64..3_000, 0u8..40, 0u8..12), 1..600),
        ) {
            let (max, ttl) = (16, Duration::from_secs(10));
            let mut interned = PreferredPaths::new(max, ttl, 7);
            let mut plain = PlainPaths {
                current: HashMap::new(),
                previous: HashMap::new(),
                rotation: Rotation::new(max, ttl),
            };
            let mut now = Time::ZERO;
            for (advance_ms, sender, hop) in ops {
                now += Duration::from_millis(advance_ms);
                interned.insert(now, id(sender), id(100 + hop));
                plain.insert(now, id(sender), id(100 + hop));
                proptest::prop_assert!(interned.hops.ids.len() <= 2 * interned.len() + HOPS_SLACK + 1);
                for probe in 0..40 {
                    proptest::prop_assert_eq!(
                        interned.get(now, &id(probe)),
                        plain.get(now, &id(probe))
                    );
                }
            }
        }
    }

    #[test]
    fn table_entries_are_small() {
        assert_eq!(std::mem::size_of::<(SenderKey, HopIndex)>(), 10);
        assert_eq!(std::mem::size_of::<NonceKey>(), 6);
    }

    #[test]
    fn rewritten_entries_do_not_pile_up_hops() {
        let mut paths = PreferredPaths::new(4_096, Duration::from_secs(30), 1);
        for n in 0..=u16::MAX {
            let mut hop = [0u8; 20];
            hop[..2].copy_from_slice(&n.to_be_bytes());
            paths.insert(Time::ZERO, id(1), PeerId::from_bytes(hop));
            assert!(paths.hops.ids.len() <= 2 + HOPS_SLACK + 1);
        }
        let mut last = [0u8; 20];
        last[..2].copy_from_slice(&u16::MAX.to_be_bytes());
        assert_eq!(
            paths.get(Time::ZERO, &id(1)),
            Some(PeerId::from_bytes(last))
        );
    }

    #[test]
    fn hops_past_the_index_space_are_not_recorded() {
        let mut hops = Hops::default();
        for n in 0..=u32::from(HopIndex::MAX) {
            let mut bytes = [0u8; 20];
            bytes[..4].copy_from_slice(&n.to_be_bytes());
            assert!(hops.intern(PeerId::from_bytes(bytes)).is_some());
        }
        assert_eq!(hops.intern(id(1)), None);
        assert_eq!(hops.intern(PeerId::from_bytes([0; 20])), Some(0));
    }

    #[test]
    fn spread_picks_closest_off_path_plus_preferred() {
        let to = id(0x10);
        let links = [id(0x11), id(0x12), id(0x13), id(0x40)];
        let on_path = |p: &PeerId| *p == id(0x11);
        let hops = spread_hops(&to, links.iter().copied(), Some(id(0x40)), on_path, 2);
        assert_eq!(hops.as_slice(), &[id(0x40), id(0x12), id(0x13)]);
        let direct = [to, id(0x11)];
        let hops = spread_hops(&to, direct.iter().copied(), Some(id(0x40)), |_| false, 2);
        assert_eq!(hops.as_slice(), &[to]);
    }

    #[test]
    fn greedy_sends_one_copy_when_progressing() {
        let me = id(0x80);
        let to = id(0x10);
        let links = [id(0x11), id(0x12)];
        let hops = greedy_hops(
            me.distance(&to),
            &to,
            links.iter().copied(),
            None,
            |_| false,
            2,
        );
        assert_eq!(hops.as_slice(), &[id(0x11)]);
    }

    #[test]
    fn greedy_spreads_at_local_minimum() {
        let me = id(0x11);
        let to = id(0x10);
        let links = [id(0x12), id(0x13), id(0x14)];
        let hops = greedy_hops(
            me.distance(&to),
            &to,
            links.iter().copied(),
            None,
            |_| false,
            2,
        );
        assert_eq!(hops.as_slice(), &[id(0x12), id(0x13)]);
    }

    #[test]
    fn greedy_prefers_the_preferred_hop_unless_on_path() {
        let me = id(0x80);
        let to = id(0x10);
        let links = [id(0x11)];
        let hops = greedy_hops(
            me.distance(&to),
            &to,
            links.iter().copied(),
            Some(id(0x70)),
            |_| false,
            2,
        );
        assert_eq!(hops.as_slice(), &[id(0x70)]);
        let on_path = |p: &PeerId| *p == id(0x70);
        let hops = greedy_hops(
            me.distance(&to),
            &to,
            links.iter().copied(),
            Some(id(0x70)),
            on_path,
            2,
        );
        assert_eq!(hops.as_slice(), &[id(0x11)]);
    }
}
