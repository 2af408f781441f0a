//! Discovery: the candidate table, which candidates to link, and what to put in a
//! `foundPeers` reply.

use std::time::Duration;

use crate::id::{ID_BITS, PeerId};
use crate::table::{Insert, KBucket};
use crate::time::Time;

/// What we know about a candidate beyond its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Candidate {
    /// Do not try to connect before this time (backoff after failures).
    pub retry_at: Time,
    /// Consecutive failed connects.
    pub failures: u8,
}

/// Known peer ids we might link to, in a k-bucket table. The original refuses newcomers when a
/// bucket is full and only forgets a candidate when its link closes; with `evict_stale` a full
/// bucket drops its least recently seen contact instead, so the table ages out dead peers.
#[derive(Debug, Clone)]
pub struct Candidates {
    table: KBucket<Candidate>,
    evict_stale: bool,
}

impl Candidates {
    /// An empty table around `local`.
    pub fn new(local: PeerId, k: usize, evict_stale: bool) -> Self {
        Candidates {
            table: KBucket::new(local, k),
            evict_stale,
        }
    }

    /// The underlying table.
    pub fn table(&self) -> &KBucket<Candidate> {
        &self.table
    }

    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Records that `id` exists (from a link or a `foundPeers` reply), making it the most
    /// recently seen in its bucket. Returns whether it is stored.
    pub fn saw(&mut self, id: PeerId) -> bool {
        let state = self.table.get(&id).copied().unwrap_or_default();
        let result = if self.evict_stale {
            self.table.insert_evicting(id, state).0
        } else {
            self.table.insert(id, state)
        };
        matches!(result, Insert::Added | Insert::Updated)
    }

    /// Forgets `id`.
    pub fn remove(&mut self, id: &PeerId) {
        self.table.remove(id);
    }

    /// A connect to `id` failed: back off exponentially before trying it again.
    pub fn connect_failed(&mut self, id: &PeerId, now: Time, base: Duration) {
        if let Some(c) = self.table.get_mut(id) {
            c.failures = c.failures.saturating_add(1);
            let factor = 1u32 << u32::from(c.failures.min(6) - 1);
            c.retry_at = now + base * factor;
        }
    }

    /// A link to `id` came up: clear its failures.
    pub fn connected(&mut self, id: &PeerId) {
        if let Some(c) = self.table.get_mut(id) {
            *c = Candidate::default();
        }
    }

    /// Whether `id` may be tried now (unknown ids may).
    pub fn ready(&self, id: &PeerId, now: Time) -> bool {
        self.table.get(id).is_none_or(|c| c.retry_at <= now)
    }

    /// The original's pick: the `n` candidates nearest to our own id.
    pub fn nearest_to_self(&self, n: usize) -> Vec<PeerId> {
        let local = *self.table.local();
        self.table
            .closest_iter(&local)
            .take(n)
            .map(|e| e.id)
            .collect()
    }

    /// Bucket-diverse pick, in priority order: the `near` candidates nearest to us, then for
    /// every XOR-distance bucket not yet `covered` (by a link or a pending connect) its most
    /// recently seen candidate. `taken` says a candidate is already linked or pending;
    /// `usable` says it may be tried now.
    pub fn bucket_diverse(
        &self,
        near: usize,
        covered: impl Fn(usize) -> bool,
        taken: impl Fn(&PeerId) -> bool,
        usable: impl Fn(&PeerId) -> bool,
    ) -> Vec<PeerId> {
        let local = *self.table.local();
        let mut picks = Vec::new();
        let mut counted = 0;
        for entry in self.table.closest_iter(&local) {
            if counted >= near {
                break;
            }
            if taken(&entry.id) {
                counted += 1;
            } else if usable(&entry.id) {
                counted += 1;
                picks.push(entry.id);
            }
        }
        for bucket in 0..self.table.depth() {
            if covered(bucket) {
                continue;
            }
            let pick = self
                .table
                .bucket(bucket)
                .iter()
                .rev()
                .find(|e| !taken(&e.id) && usable(&e.id) && !picks.contains(&e.id));
            if let Some(entry) = pick {
                picks.push(entry.id);
            }
        }
        picks
    }

    /// The original's `foundPeers` reply: the `n` candidates nearest to `target`, leaving out
    /// the asker.
    pub fn nearest_reply(&self, asker: &PeerId, target: &PeerId, n: usize) -> Vec<PeerId> {
        self.table
            .closest_iter(target)
            .map(|e| e.id)
            .filter(|id| id != asker)
            .take(n)
            .collect()
    }

    /// A reply that helps the asker fill its buckets: half nearest to `target`, then one
    /// candidate for each XOR-distance bucket of the asker's not represented yet (most
    /// recently seen first), then more nearest ones to fill up to `n`.
    pub fn diverse_reply(&self, asker: &PeerId, target: &PeerId, n: usize) -> Vec<PeerId> {
        let mut out: Vec<PeerId> = Vec::with_capacity(n);
        let mut nearest = self
            .table
            .closest_iter(target)
            .map(|e| e.id)
            .filter(|id| id != asker);
        out.extend(nearest.by_ref().take(n / 2));
        let mut represented = [false; ID_BITS + 1];
        for id in &out {
            represented[asker.common_prefix_len(id)] = true;
        }
        for bucket in (0..=self.table.depth()).rev() {
            for entry in self.table.bucket(bucket).iter().rev() {
                if out.len() >= n {
                    return out;
                }
                let b = asker.common_prefix_len(&entry.id);
                if entry.id != *asker && !represented[b] {
                    represented[b] = true;
                    out.push(entry.id);
                }
            }
        }
        for id in nearest {
            if out.len() >= n {
                break;
            }
            if !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(first: u8, last: u8) -> PeerId {
        let mut b = [0u8; 20];
        b[0] = first;
        b[19] = last;
        PeerId::from_bytes(b)
    }

    #[test]
    fn stale_candidates_are_evicted_when_enabled() {
        let me = id(0, 0);
        let mut keep = Candidates::new(me, 2, false);
        let mut evict = Candidates::new(me, 2, true);
        for c in [&mut keep, &mut evict] {
            c.saw(id(0x80, 1));
            c.saw(id(0x80, 2));
            c.saw(id(0x01, 0)); // forces the split so bucket 0 is a far bucket
        }
        assert!(!keep.saw(id(0x80, 3)));
        assert!(evict.saw(id(0x80, 3)));
        assert!(!evict.table().contains(&id(0x80, 1)));
    }

    #[test]
    fn failures_back_off_and_connect_clears_them() {
        let me = id(0, 0);
        let mut c = Candidates::new(me, 20, true);
        let peer = id(0x80, 1);
        c.saw(peer);
        let base = Duration::from_secs(5);
        c.connect_failed(&peer, Time::ZERO, base);
        assert!(!c.ready(&peer, Time::from_millis(4_999)));
        assert!(c.ready(&peer, Time::from_millis(5_000)));
        c.connect_failed(&peer, Time::ZERO, base);
        assert!(!c.ready(&peer, Time::from_millis(9_999)));
        c.saw(peer);
        assert!(
            !c.ready(&peer, Time::from_millis(9_999)),
            "seeing it again keeps the backoff"
        );
        c.connected(&peer);
        assert!(c.ready(&peer, Time::ZERO));
    }

    #[test]
    fn bucket_diverse_covers_each_bucket_once() {
        let me = id(0, 0);
        let mut c = Candidates::new(me, 3, true);
        // Bucket 0 (first bit differs), bucket 1, bucket 2, plus near ones.
        for peer in [
            id(0x80, 1),
            id(0x81, 1),
            id(0x40, 1),
            id(0x41, 1),
            id(0x20, 1),
            id(0x00, 9),
            id(0x00, 8),
        ] {
            c.saw(peer);
        }
        let picks = c.bucket_diverse(2, |_| false, |_| false, |_| true);
        assert_eq!(&picks[..2], &[id(0x00, 8), id(0x00, 9)]);
        let buckets: Vec<usize> = picks[2..].iter().map(|p| me.common_prefix_len(p)).collect();
        let mut unique = buckets.clone();
        unique.dedup();
        assert_eq!(buckets, unique, "one pick per bucket");
        assert!(buckets.contains(&0) && buckets.contains(&1));
        // Covered buckets are skipped.
        let picks = c.bucket_diverse(0, |b| b == 0, |_| false, |_| true);
        assert!(picks.iter().all(|p| me.common_prefix_len(p) != 0));
    }

    #[test]
    fn replies_leave_out_the_asker() {
        let me = id(0, 0);
        let mut c = Candidates::new(me, 20, true);
        let asker = id(0x80, 1);
        for last in 1..10 {
            c.saw(id(0x80, last));
            c.saw(id(0x40, last));
        }
        let nearest = c.nearest_reply(&asker, &asker, 5);
        assert_eq!(nearest.len(), 5);
        assert!(!nearest.contains(&asker));
        let diverse = c.diverse_reply(&asker, &asker, 6);
        assert_eq!(diverse.len(), 6);
        assert!(!diverse.contains(&asker));
        let buckets: std::collections::BTreeSet<usize> =
            diverse.iter().map(|p| asker.common_prefix_len(p)).collect();
        assert!(
            buckets.len() >= 3,
            "reply spans several of the asker's buckets: {buckets:?}"
        );
    }
}
