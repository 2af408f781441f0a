//! Router state: duplicate suppression, preferred paths back to senders, the pre-link queue,
//! and next-hop selection.
//!
//! Every structure here is bounded by a [`Config`](crate::Config) field. Hash maps are keyed
//! with a seed from the node's RNG (never the OS), and are only ever probed, never iterated
//! into outputs, so determinism holds.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use foldhash::fast::FixedState;
use smallvec::SmallVec;

use crate::id::{Distance, PeerId};
use crate::time::Time;
use crate::wire::Nonce;

/// Nonces seen recently, bounded by count and by age.
#[derive(Debug, Clone)]
pub struct SeenNonces {
    set: HashSet<u128, FixedState>,
    order: VecDeque<(Time, u128)>,
    max: usize,
    ttl: Duration,
}

impl SeenNonces {
    /// A cache of at most `max` nonces, each kept for `ttl`.
    pub fn new(max: usize, ttl: Duration, hash_seed: u64) -> Self {
        SeenNonces {
            set: HashSet::with_hasher(FixedState::with_seed(hash_seed)),
            order: VecDeque::new(),
            max: max.max(1),
            ttl,
        }
    }

    /// Records `nonce`; false if it was already there (a duplicate).
    pub fn insert(&mut self, now: Time, nonce: &Nonce) -> bool {
        self.expire(now);
        let key = nonce.key();
        if !self.set.insert(key) {
            return false;
        }
        if self.order.len() >= self.max {
            if let Some((_, oldest)) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
        self.order.push_back((now, key));
        true
    }

    /// Whether `nonce` is remembered.
    pub fn contains(&self, nonce: &Nonce) -> bool {
        self.set.contains(&nonce.key())
    }

    fn expire(&mut self, now: Time) {
        while let Some(&(at, key)) = self.order.front() {
            if at + self.ttl > now {
                break;
            }
            self.order.pop_front();
            self.set.remove(&key);
        }
        // Give memory back after a burst.
        if self.set.capacity() > 64 && self.set.len() < self.set.capacity() / 4 {
            self.set.shrink_to(self.set.len() * 2);
            self.order.shrink_to(self.order.len() * 2);
        }
    }

    /// Number of nonces remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// For each recent sender, the link its last message arrived on: replies go back that way.
/// Bounded by count; the entry updated longest ago is evicted first.
#[derive(Debug, Clone)]
pub struct PreferredPaths {
    map: HashMap<PeerId, (PeerId, u64), FixedState>,
    /// Insertion log of `(sender, sequence)`; stale entries are skipped on eviction and
    /// compacted away when the log doubles the map.
    log: VecDeque<(PeerId, u64)>,
    seq: u64,
    max: usize,
}

impl PreferredPaths {
    /// A table of at most `max` senders (`0` disables it).
    pub fn new(max: usize, hash_seed: u64) -> Self {
        PreferredPaths {
            map: HashMap::with_hasher(FixedState::with_seed(hash_seed)),
            log: VecDeque::new(),
            seq: 0,
            max,
        }
    }

    /// Remembers that `sender`'s latest message arrived over the link to `hop`.
    pub fn insert(&mut self, sender: PeerId, hop: PeerId) {
        if self.max == 0 {
            return;
        }
        if let Some((known, _)) = self.map.get(&sender) {
            if *known == hop {
                return;
            }
        }
        self.seq += 1;
        self.map.insert(sender, (hop, self.seq));
        self.log.push_back((sender, self.seq));
        while self.map.len() > self.max {
            let Some((old, seq)) = self.log.pop_front() else {
                break;
            };
            if self.map.get(&old).is_some_and(|(_, s)| *s == seq) {
                self.map.remove(&old);
            }
        }
        if self.log.len() > 2 * self.max {
            let map = &self.map;
            self.log
                .retain(|(id, seq)| map.get(id).is_some_and(|(_, s)| s == seq));
        }
    }

    /// The link `sender`'s latest message arrived over.
    pub fn get(&self, sender: &PeerId) -> Option<PeerId> {
        self.map.get(sender).map(|(hop, _)| *hop)
    }

    /// Number of senders remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// A message originated while no link existed, waiting for the first one.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    fn seen_nonces_expire_by_age() {
        let mut seen = SeenNonces::new(100, Duration::from_secs(60), 1);
        seen.insert(Time::ZERO, &nonce(1));
        seen.insert(Time::from_millis(59_000), &nonce(2));
        seen.insert(Time::from_millis(60_000), &nonce(3));
        assert!(!seen.contains(&nonce(1)));
        assert!(seen.contains(&nonce(2)));
        assert!(
            seen.insert(Time::from_millis(60_001), &nonce(1)),
            "expired nonce is new again"
        );
    }

    #[test]
    fn preferred_paths_bounded_and_latest_wins() {
        let mut p = PreferredPaths::new(3, 1);
        p.insert(id(1), id(10));
        p.insert(id(1), id(11));
        assert_eq!(p.get(&id(1)), Some(id(11)));
        for n in 2..50 {
            p.insert(id(n), id(10));
            assert!(p.len() <= 3);
            assert!(p.log.len() <= 6 + 1);
        }
        assert_eq!(p.get(&id(49)), Some(id(10)));
        assert_eq!(p.get(&id(1)), None);
        // Updating keeps an entry fresh.
        let mut p = PreferredPaths::new(2, 1);
        p.insert(id(1), id(10));
        p.insert(id(2), id(10));
        p.insert(id(1), id(11));
        p.insert(id(3), id(10));
        assert_eq!(p.get(&id(1)), Some(id(11)));
        assert_eq!(p.get(&id(2)), None);
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
