//! Discovery: the candidate table, which candidates to link, and what to put in a
//! `foundPeers` reply.

use std::time::Duration;

use rand_core::Rng;
use smallvec::SmallVec;

use crate::compact::CompactMap;
use crate::id::{ID_BITS, PeerId};
use crate::table::{Insert, KBucket};
use crate::time::Time;

/// Known peer ids we might link to, in a k-bucket table. The original refuses newcomers when a
/// bucket is full and only forgets a candidate when its link closes; with `evict_stale` a full
/// bucket drops its least recently seen contact instead, so the table ages out dead peers.
///
/// The table holds bare ids (20 bytes each: it is most of an idle node's memory); the few
/// peers with a retry time are in `Backoffs`.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub struct Candidates {
    table: KBucket<()>,
    evict_stale: bool,
    backoffs: Backoffs,
}

/// How long a decline is remembered after its backoff ended, so the next one doubles it.
const DECLINE_MEMORY: Duration = Duration::from_secs(60);

/// Retry times (and consecutive failures) of peers whose connects failed or whose links
/// closed, kept apart from the candidate table: a candidate evicted from a full bucket and
/// learned again keeps its backoff, so two peers that cannot link (say, no transport in
/// common) do not re-offer at once, forever. Two generations of at most `max / 2` entries
/// each. An entry with no failures whose time has passed says nothing that its absence does
/// not; such entries are dropped whenever the current generation would otherwise grow, so
/// a long-lived node's links closing one after another do not pile up entries.
///
/// Each generation is a sorted vector ([`CompactMap`]): an idle node remembers a handful of
/// backoffs, and a B-tree's first leaf alone is room for eleven.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
struct Backoffs {
    current: CompactMap<PeerId, Backoff>,
    previous: CompactMap<PeerId, Backoff>,
    half_max: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
struct Backoff {
    /// Do not try to connect before this time.
    retry_at: Time,
    /// Consecutive failed connects.
    failures: u8,
    /// Consecutive declined offers (the peer is alive but full).
    declines: u8,
}

impl Backoff {
    /// Whether this entry still changes an answer at `now`: it delays a retry, or it counts
    /// failures toward the next one's backoff.
    fn matters(&self, now: Time) -> bool {
        self.failures > 0
            || self.retry_at > now
            || (self.declines > 0 && now < self.retry_at + DECLINE_MEMORY)
    }
}

impl Backoffs {
    fn new(max: usize) -> Self {
        Backoffs {
            current: CompactMap::new(),
            previous: CompactMap::new(),
            half_max: (max / 2).max(1),
        }
    }

    fn insert(&mut self, id: PeerId, backoff: Backoff, now: Time) {
        if self.current.len() >= self.half_max && !self.current.contains_key(&id) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.previous.remove(&id);
        let mut pruned = false;
        self.current.insert_pruning(id, backoff, |_, b| {
            let keep = b.matters(now);
            pruned |= !keep;
            keep
        });
        if pruned {
            self.previous.retain(|_, b| b.matters(now));
        }
    }

    /// Drops every entry that no longer changes an answer (see [`Backoff::matters`]).
    fn forget_stale(&mut self, now: Time) {
        self.current.retain(|_, b| b.matters(now));
        self.previous.retain(|_, b| b.matters(now));
    }

    fn get(&self, id: &PeerId) -> Option<Backoff> {
        self.current
            .get(id)
            .or_else(|| self.previous.get(id))
            .copied()
    }

    fn remove(&mut self, id: &PeerId) {
        self.current.remove(id);
        self.previous.remove(id);
    }

    fn ready(&self, id: &PeerId, now: Time) -> bool {
        self.get(id).is_none_or(|b| b.retry_at <= now)
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

impl Candidates {
    /// An empty table around `local`.
    pub fn new(local: PeerId, k: usize, evict_stale: bool, backoffs_max: usize) -> Self {
        Candidates {
            table: KBucket::new(local, k),
            evict_stale,
            backoffs: Backoffs::new(backoffs_max),
        }
    }

    /// Peers whose retry time is remembered apart from the table.
    pub fn backoffs(&self) -> usize {
        self.backoffs.len()
    }

    /// The underlying table.
    pub fn table(&self) -> &KBucket<()> {
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
        let result = if self.evict_stale {
            self.table.insert_evicting(id, ()).0
        } else {
            self.table.insert(id, ())
        };
        matches!(result, Insert::Added | Insert::Updated)
    }

    /// Forgets `id`.
    pub fn remove(&mut self, id: &PeerId) {
        self.table.remove(id);
    }

    /// A connect to `id` failed: back off exponentially before trying it again.
    /// After this many consecutive failures a candidate is presumed gone and forgotten.
    pub const MAX_FAILURES: u8 = 4;

    /// A connect to `id` failed: back off exponentially before trying it again, and forget it
    /// after [`Self::MAX_FAILURES`] failures in a row (that is how departed peers age out).
    pub fn connect_failed(&mut self, id: &PeerId, now: Time, base: Duration) {
        let failures = self
            .backoffs
            .get(id)
            .map_or(0, |b| b.failures)
            .saturating_add(1);
        let retry_at = now + base * (1u32 << u32::from(failures.min(Self::MAX_FAILURES) - 1));
        if failures >= Self::MAX_FAILURES {
            self.table.remove(id);
        }
        let declines = 0;
        self.backoffs.insert(
            *id,
            Backoff {
                retry_at,
                failures,
                declines,
            },
            now,
        );
    }

    /// `id` declined our offer: it is alive but full. Left alone for `base`, doubled per
    /// decline in a row (up to 16 x): a full peer that declined is likely to decline again,
    /// and a joiner whose nearest candidates are all full must move past them.
    pub fn declined(&mut self, id: &PeerId, now: Time, base: Duration) {
        // Alive, so its failures (if any) no longer count.
        let declines = self
            .backoffs
            .get(id)
            .filter(|b| b.matters(now))
            .map_or(0, |b| b.declines)
            .saturating_add(1);
        let retry_at = now + base * (1u32 << u32::from(declines.min(5) - 1));
        let backoff = Backoff {
            retry_at,
            failures: 0,
            declines,
        };
        self.backoffs.insert(*id, backoff, now);
    }

    /// A link to `id` closed. The peer may be gone or may just have shed the link (a budget
    /// close looks the same from here), so it stays a candidate, not retried for `base`.
    pub fn link_closed(&mut self, id: &PeerId, now: Time, base: Duration) {
        let backoff = Backoff {
            retry_at: now + base,
            failures: 0,
            declines: 0,
        };
        self.backoffs.insert(*id, backoff, now);
    }

    /// Drops the backoffs whose time has passed and that count no failures. Entries are
    /// otherwise pruned only when new ones arrive, and a burst of closes or declines (a
    /// growing network sends dozens per peer) would sit in an idle node for good.
    pub fn forget_stale_backoffs(&mut self, now: Time) {
        self.backoffs.forget_stale(now);
    }

    /// A link to `id` came up: clear its failures.
    pub fn connected(&mut self, id: &PeerId) {
        self.backoffs.remove(id);
    }

    /// Whether `id` may be tried now (unknown ids may).
    pub fn ready(&self, id: &PeerId, now: Time) -> bool {
        self.backoffs.ready(id, now)
    }

    /// The original's pick: the `n` candidates nearest to our own id.
    /// Lazy: buckets are sorted only as far as the caller reads.
    pub fn nearest_to_self(&self, n: usize) -> impl Iterator<Item = PeerId> + '_ {
        self.table
            .closest_iter(self.table.local())
            .take(n)
            .map(|e| e.id)
    }

    /// Bucket-diverse pick, in priority order: the `near` candidates nearest to us, then for
    /// every XOR-distance bucket not yet `covered` (by a link or a pending connect) one of its
    /// candidates, chosen uniformly at random. Random choice spreads the links a bucket's
    /// members receive evenly (about one each, by symmetry); "most recently seen" would pile
    /// them onto whoever was heard of last. `taken` says a candidate is already linked or
    /// pending; `usable` says it may be tried now.
    pub fn bucket_diverse<R: Rng + ?Sized>(
        &self,
        near: usize,
        covered: impl Fn(usize) -> bool,
        taken: impl Fn(&PeerId) -> bool,
        usable: impl Fn(&PeerId) -> bool,
        rng: &mut R,
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
        // Group by the real shared-prefix length: the candidate table only splits its near
        // bucket when it overflows, so one of its buckets can span many XOR buckets.
        let mut eligible: Vec<(usize, PeerId)> = self
            .table
            .iter()
            .map(|e| (local.common_prefix_len(&e.id), e.id))
            .filter(|(b, id)| !covered(*b) && !taken(id) && usable(id) && !picks.contains(id))
            .collect();
        eligible.sort_unstable();
        for group in eligible.chunk_by(|a, b| a.0 == b.0) {
            let index = (rng.next_u64() % group.len() as u64) as usize;
            picks.push(group[index].1);
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
    ///
    /// Each step takes `reachable` candidates (the responder's links) before others: the
    /// asker's offers to them go through the responder (see `Node::note_introductions`),
    /// which can hand them over directly, while an offer to a mere candidate has to find
    /// its own way — and in a young network often does not.
    pub fn diverse_reply(
        &self,
        asker: &PeerId,
        target: &PeerId,
        n: usize,
        reachable: impl Fn(&PeerId) -> bool,
    ) -> Vec<PeerId> {
        let mut out: Vec<PeerId> = Vec::with_capacity(n);
        // The `n` nearest to `target`, the responder's links first.
        let (mut nearest, other): (SmallVec<[PeerId; 32]>, SmallVec<[PeerId; 32]>) = self
            .table
            .closest_iter(target)
            .map(|e| e.id)
            .filter(|id| id != asker)
            .take(n)
            .partition(|id| reachable(id));
        nearest.extend(other);
        out.extend(nearest.iter().take(n / 2).copied());
        let mut represented = [false; ID_BITS + 1];
        for id in &out {
            represented[asker.common_prefix_len(id)] = true;
        }
        // Below the table's depth, bucket `i` holds ids sharing exactly `i` bits with us, so
        // each shares `min(i, c)` bits with the asker: one look settles the whole bucket.
        let c = asker.common_prefix_len(self.table.local());
        let depth = self.table.depth();
        for pass_reachable in [true, false] {
            for bucket in (0..=depth).rev() {
                if bucket < depth && bucket != c && represented[bucket.min(c)] {
                    continue;
                }
                for entry in self.table.bucket(bucket).iter().rev() {
                    if out.len() >= n {
                        return out;
                    }
                    let b = asker.common_prefix_len(&entry.id);
                    if entry.id != *asker
                        && !represented[b]
                        && reachable(&entry.id) == pass_reachable
                    {
                        represented[b] = true;
                        out.push(entry.id);
                    }
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

/// Most peers one lookup asks in turn before giving up.
pub const LOOKUP_STEPS: usize = 3;

/// A bucket lookup in progress: we asked `asked.last()` for the peers it knows nearest to
/// `target`, a random id in our XOR-distance bucket `bucket`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub struct Lookup {
    /// The id we look for peers near.
    pub target: PeerId,
    /// The bucket we want to cover.
    pub bucket: usize,
    /// Peers asked so far, in order.
    pub asked: SmallVec<[PeerId; LOOKUP_STEPS]>,
    /// When the current question is given up.
    pub expires: Time,
}

/// Kademlia-style bucket lookups, the fix for buckets we know no peer in: `findPeers` carries
/// any target id, and every peer (the original included) answers with the candidates it knows
/// nearest to that target. Asking the peer we know nearest to a random id in an empty bucket,
/// then the nearest one it names, finds the bucket's members in a few steps.
///
/// Most XOR buckets deeper than about log2 n hold no peer at all, in any network, yet a node
/// that knows one peer deeper still counts them as uncovered. Looking them up at every
/// refresh was most of an idle node's traffic, so a bucket whose lookup ended without
/// finding anyone to link turns *quiet*: it is not looked up again for twice the refresh
/// interval, doubled per fruitless lookup up to `Config::lookup_retry_max`. A link in the
/// bucket ends its quiet at once. At most one entry per bucket (161).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub struct Lookups {
    active: Vec<Lookup>,
    max: usize,
    quiet: Vec<QuietBucket>,
}

/// A bucket whose lookups found no one to link, and when it may be looked up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
struct QuietBucket {
    bucket: u8,
    /// Fruitless lookups in a row.
    strikes: u8,
    until: Time,
}

impl Lookups {
    /// At most `max` lookups at once.
    pub fn new(max: usize) -> Self {
        Lookups {
            active: Vec::new(),
            max,
            quiet: Vec::new(),
        }
    }

    /// Whether `bucket` is quiet at `now` (skipped by new lookups).
    pub fn is_quiet(&self, bucket: usize, now: Time) -> bool {
        self.quiet
            .iter()
            .any(|q| usize::from(q.bucket) == bucket && q.until > now)
    }

    /// Buckets remembered as quiet (at most one entry per bucket).
    pub fn quiet_len(&self) -> usize {
        self.quiet.len()
    }

    /// A lookup for `bucket` ended without finding anyone to link: the bucket is quiet for
    /// `interval` times two to the power of its fruitless lookups in a row, at most `max`.
    /// Another lookup for the same bucket ending while it is quiet (a refresh asks two
    /// peers per bucket) is no new strike.
    pub fn fruitless(&mut self, bucket: usize, now: Time, interval: Duration, max: Duration) {
        let Ok(bucket) = u8::try_from(bucket) else {
            return;
        };
        let at = match self.quiet.iter().position(|q| q.bucket == bucket) {
            Some(at) => at,
            None => {
                self.quiet.push(QuietBucket {
                    bucket,
                    strikes: 0,
                    until: now,
                });
                self.quiet.len() - 1
            }
        };
        let entry = &mut self.quiet[at];
        if entry.until > now {
            return;
        }
        entry.strikes = entry.strikes.saturating_add(1).min(16);
        let delay = interval.saturating_mul(1 << entry.strikes).min(max);
        entry.until = now + delay;
    }

    /// `bucket` holds a link now: its quiet ends.
    pub fn bucket_covered(&mut self, bucket: usize) {
        if let Some(at) = self
            .quiet
            .iter()
            .position(|q| usize::from(q.bucket) == bucket)
        {
            self.quiet.swap_remove(at);
        }
    }

    /// Lookups in progress.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// Whether none is in progress.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Whether another may start.
    pub fn has_room(&self) -> bool {
        self.active.len() < self.max
    }

    /// Whether a lookup for `bucket` is in progress.
    pub fn covers(&self, bucket: usize) -> bool {
        self.active.iter().any(|l| l.bucket == bucket)
    }

    /// Forgets questions that went unanswered.
    pub fn expire(&mut self, now: Time) {
        self.active.retain(|l| l.expires > now);
    }

    /// Records a question (the caller sends it). Ignored when full.
    pub fn ask(&mut self, lookup: Lookup) {
        if self.has_room() {
            self.active.push(lookup);
        }
    }

    /// A `foundPeers` from `sender` arrived: the lookup it answers, removed, if any.
    pub fn answered(&mut self, sender: &PeerId) -> Option<Lookup> {
        let index = self
            .active
            .iter()
            .position(|l| l.asked.last() == Some(sender))?;
        Some(self.active.swap_remove(index))
    }
}

/// A uniformly random id sharing exactly `bucket` leading bits with `local`.
pub fn random_id_in_bucket<R: Rng + ?Sized>(local: &PeerId, bucket: usize, rng: &mut R) -> PeerId {
    let mut bytes = [0u8; crate::id::ID_LEN];
    rng.fill_bytes(&mut bytes);
    let own = local.as_bytes();
    for bit in 0..=bucket.min(ID_BITS - 1) {
        let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
        let want = if bit == bucket {
            !own[byte] & mask
        } else {
            own[byte] & mask
        };
        bytes[byte] = (bytes[byte] & !mask) | want;
    }
    PeerId::from_bytes(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    use crate::id::test_id as id;

    #[test]
    fn stale_candidates_are_evicted_when_enabled() {
        let me = id(0, 0);
        let mut keep = Candidates::new(me, 2, false, 64);
        let mut evict = Candidates::new(me, 2, true, 64);
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
    fn an_evicted_and_relearned_candidate_keeps_its_backoff() {
        let me = id(0, 0);
        let mut c = Candidates::new(me, 1, true, 64);
        let (a, b) = (id(0x80, 1), id(0x80, 2));
        let now = Time::from_millis(1_000);
        c.saw(a);
        c.connect_failed(&a, now, Duration::from_secs(5));
        assert!(!c.ready(&a, now));
        // A one-contact bucket: hearing of `b` evicts `a`, hearing of `a` again evicts `b`.
        c.saw(b);
        assert!(!c.table().contains(&a));
        c.saw(a);
        assert!(c.table().contains(&a));
        assert!(!c.ready(&a, now), "re-learned with its backoff");
        assert!(c.ready(&a, now + Duration::from_secs(5)));
        c.connected(&a);
        assert_eq!(c.backoffs(), 0);
    }

    #[test]
    fn declines_in_a_row_double_the_wait_and_are_forgotten_a_minute_after() {
        let me = id(0, 0);
        let mut c = Candidates::new(me, 20, true, 64);
        let full = id(0x80, 1);
        let base = Duration::from_secs(10);
        let secs = |s: u64| Time::from_millis(s * 1_000);
        c.declined(&full, secs(0), base);
        assert!(!c.ready(&full, secs(9)) && c.ready(&full, secs(10)));
        // Offered again as soon as allowed, declined again: 20 s, then 40, 80, 160, 160.
        let mut at = 10;
        for wait in [20, 40, 80, 160, 160] {
            c.declined(&full, secs(at), base);
            assert!(
                !c.ready(&full, secs(at + wait - 1)),
                "{wait} s after {at} s"
            );
            assert!(c.ready(&full, secs(at + wait)), "{wait} s after {at} s");
            at += wait;
        }
        // A decline long after the last one's wait ended starts over at the base.
        let later = at + 160 + 61;
        c.forget_stale_backoffs(secs(later));
        assert_eq!(c.backoffs(), 0, "nothing left to remember");
        c.declined(&full, secs(later), base);
        assert!(c.ready(&full, secs(later + 10)));
        // A decline says the peer is alive: earlier failures no longer count.
        let flaky = id(0x80, 2);
        for _ in 0..3 {
            c.connect_failed(&flaky, secs(0), base);
        }
        c.declined(&flaky, secs(100), base);
        c.connect_failed(&flaky, secs(200), base);
        assert!(c.ready(&flaky, secs(210)), "a first failure again: 10 s");
    }

    #[test]
    fn remembered_backoffs_stay_within_their_bound() {
        let me = id(0, 0);
        let mut c = Candidates::new(me, 20, true, 8);
        for n in 0..100u8 {
            c.connect_failed(&id(0x40, n), Time::ZERO, Duration::from_secs(5));
            assert!(c.backoffs() <= 8);
        }
    }

    #[test]
    fn expired_clean_backoffs_are_dropped_failures_are_kept() {
        let me = id(0, 0);
        let mut c = Candidates::new(me, 20, true, 1_024);
        let base = Duration::from_secs(5);
        let failed = id(0x40, 0);
        c.connect_failed(&failed, Time::ZERO, base);
        // A link closes every second for 1,000 s: only the last few seconds' entries, and the
        // failure, are worth keeping.
        for n in 0..1_000u32 {
            let peer = id(0x80, (n % 250) as u8 + 1);
            let now = Time::from_millis(u64::from(n) * 1_000);
            c.link_closed(&peer, now, base);
            assert!(c.backoffs() <= 16, "{} backoffs at {n} s", c.backoffs());
        }
        let now = Time::from_millis(1_000_000);
        assert!(
            !c.ready(&id(0x80, (999 % 250) as u8 + 1), now),
            "the last close's backoff"
        );
        // Its time has passed, but a second failure still doubles the backoff.
        c.connect_failed(&failed, now, base);
        assert!(!c.ready(&failed, now + Duration::from_millis(9_999)));
        assert!(c.ready(&failed, now + Duration::from_secs(10)));
    }

    #[test]
    fn a_burst_of_clean_backoffs_is_forgotten_once_its_time_passed() {
        let me = id(0, 0);
        let mut c = Candidates::new(me, 20, true, 1_024);
        let base = Duration::from_secs(10);
        let failed = id(0x40, 0);
        c.connect_failed(&failed, Time::ZERO, base);
        for n in 1..=60u8 {
            c.link_closed(&id(0x80, n), Time::ZERO, base);
        }
        assert_eq!(c.backoffs(), 61);
        c.forget_stale_backoffs(Time::from_millis(9_999));
        assert_eq!(c.backoffs(), 61, "still backing off");
        c.forget_stale_backoffs(Time::from_millis(10_000));
        assert_eq!(c.backoffs(), 1, "the failure is kept");
        assert!(c.ready(&id(0x80, 1), Time::from_millis(10_000)));
    }

    #[test]
    fn failures_back_off_and_connect_clears_them() {
        let me = id(0, 0);
        let mut c = Candidates::new(me, 20, true, 64);
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
        for failure in 1..=Candidates::MAX_FAILURES {
            assert!(c.table().contains(&peer), "kept until failure {failure}");
            c.connect_failed(&peer, Time::ZERO, base);
        }
        assert!(!c.table().contains(&peer), "presumed gone");
        assert!(
            !c.ready(&peer, Time::from_millis(39_999)),
            "capped at 8 x base"
        );
        assert!(c.ready(&peer, Time::from_millis(40_000)));
    }

    #[test]
    fn bucket_diverse_covers_each_bucket_once() {
        let me = id(0, 0);
        let mut c = Candidates::new(me, 3, true, 64);
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
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        let picks = c.bucket_diverse(2, |_| false, |_| false, |_| true, &mut rng);
        assert_eq!(&picks[..2], &[id(0x00, 8), id(0x00, 9)]);
        let buckets: Vec<usize> = picks[2..].iter().map(|p| me.common_prefix_len(p)).collect();
        let mut unique = buckets.clone();
        unique.dedup();
        assert_eq!(buckets, unique, "one pick per bucket");
        assert!(buckets.contains(&0) && buckets.contains(&1));
        // Covered buckets are skipped.
        let picks = c.bucket_diverse(0, |b| b == 0, |_| false, |_| true, &mut rng);
        assert!(picks.iter().all(|p| me.common_prefix_len(p) != 0));
    }

    #[test]
    fn replies_leave_out_the_asker() {
        let me = id(0, 0);
        let mut c = Candidates::new(me, 20, true, 64);
        let asker = id(0x80, 1);
        for last in 1..10 {
            c.saw(id(0x80, last));
            c.saw(id(0x40, last));
        }
        let nearest = c.nearest_reply(&asker, &asker, 5);
        assert_eq!(nearest.len(), 5);
        assert!(!nearest.contains(&asker));
        let diverse = c.diverse_reply(&asker, &asker, 6, |_| false);
        assert_eq!(diverse.len(), 6);
        assert!(!diverse.contains(&asker));
        let buckets: std::collections::BTreeSet<usize> =
            diverse.iter().map(|p| asker.common_prefix_len(p)).collect();
        assert!(
            buckets.len() >= 3,
            "reply spans several of the asker's buckets: {buckets:?}"
        );
    }

    /// [`Candidates::diverse_reply`] as it was first written: every entry of every bucket
    /// looked at in both passes.
    fn diverse_reply_full_scan(
        c: &Candidates,
        asker: &PeerId,
        target: &PeerId,
        n: usize,
        reachable: impl Fn(&PeerId) -> bool,
    ) -> Vec<PeerId> {
        let (mut nearest, other): (Vec<PeerId>, Vec<PeerId>) = c
            .table
            .closest_iter(target)
            .map(|e| e.id)
            .filter(|id| id != asker)
            .take(n)
            .partition(|id| reachable(id));
        nearest.extend(other);
        let mut out: Vec<PeerId> = nearest.iter().take(n / 2).copied().collect();
        let mut represented = [false; ID_BITS + 1];
        for id in &out {
            represented[asker.common_prefix_len(id)] = true;
        }
        for pass_reachable in [true, false] {
            for bucket in (0..=c.table.depth()).rev() {
                for entry in c.table.bucket(bucket).iter().rev() {
                    if out.len() >= n {
                        return out;
                    }
                    let b = asker.common_prefix_len(&entry.id);
                    if entry.id != *asker
                        && !represented[b]
                        && reachable(&entry.id) == pass_reachable
                    {
                        represented[b] = true;
                        out.push(entry.id);
                    }
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

    proptest::proptest! {
        /// Skipping whole buckets already represented changes no reply.
        #[test]
        fn diverse_replies_equal_a_full_scan(
            seed in proptest::prelude::any::<u64>(),
            peers in 0usize..400,
            asker_bucket in 0usize..24,
            asker_known in proptest::prelude::any::<bool>(),
            k in 1usize..21,
            n in 0usize..30,
            reachable_one_in in 1u8..6,
        ) {
            let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
            let me = PeerId::random(&mut rng);
            let mut c = Candidates::new(me, k, true, 64);
            for _ in 0..peers {
                let bucket = (rng.next_u32() % 24) as usize;
                c.saw(random_id_in_bucket(&me, bucket, &mut rng));
            }
            let asker = random_id_in_bucket(&me, asker_bucket, &mut rng);
            if asker_known {
                c.saw(asker);
            }
            let target = random_id_in_bucket(&asker, (rng.next_u32() % 24) as usize, &mut rng);
            let reachable = |id: &PeerId| id.as_bytes()[19] % reachable_one_in == 0;
            proptest::prop_assert_eq!(
                c.diverse_reply(&asker, &target, n, reachable),
                diverse_reply_full_scan(&c, &asker, &target, n, reachable)
            );
        }
    }

    #[test]
    fn random_ids_land_in_the_asked_bucket() {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
        let me = PeerId::random(&mut rng);
        for bucket in [0, 1, 7, 8, 9, 63, 159] {
            for _ in 0..20 {
                assert_eq!(
                    me.common_prefix_len(&random_id_in_bucket(&me, bucket, &mut rng)),
                    bucket
                );
            }
        }
    }

    #[test]
    fn lookups_are_bounded_and_matched_by_the_peer_asked() {
        let mut lookups = Lookups::new(2);
        let ask = |n: u8, at: u64| Lookup {
            target: id(n, 0),
            bucket: usize::from(n),
            asked: smallvec::smallvec![id(n, 1)],
            expires: Time::from_millis(at),
        };
        lookups.ask(ask(1, 100));
        lookups.ask(ask(2, 200));
        lookups.ask(ask(3, 300));
        assert_eq!(lookups.len(), 2);
        assert!(lookups.covers(1) && !lookups.covers(3));
        assert_eq!(lookups.answered(&id(2, 1)).map(|l| l.bucket), Some(2));
        assert_eq!(lookups.answered(&id(2, 1)), None);
        lookups.expire(Time::from_millis(100));
        assert!(lookups.is_empty());
    }

    #[test]
    fn fruitless_lookups_quiet_a_bucket_for_doubling_times_until_a_link_covers_it() {
        let mut lookups = Lookups::new(8);
        let (interval, max) = (Duration::from_secs(15), Duration::from_secs(240));
        let t = |s: u64| Time::from_millis(s * 1_000);
        assert!(!lookups.is_quiet(12, t(0)));
        lookups.fruitless(12, t(0), interval, max);
        assert!(lookups.is_quiet(12, t(29)) && !lookups.is_quiet(12, t(30)));
        assert!(!lookups.is_quiet(11, t(1)), "only the bucket looked up");
        // The second lookup of the same refresh ending fruitless too is no new strike.
        lookups.fruitless(12, t(1), interval, max);
        assert!(!lookups.is_quiet(12, t(30)));
        // Strikes double the quiet: 60 s, 120 s, then the cap of 240 s.
        lookups.fruitless(12, t(30), interval, max);
        assert!(lookups.is_quiet(12, t(89)) && !lookups.is_quiet(12, t(90)));
        lookups.fruitless(12, t(90), interval, max);
        assert!(!lookups.is_quiet(12, t(210)));
        for _ in 0..20 {
            lookups.fruitless(12, t(210), interval, max);
        }
        assert!(lookups.is_quiet(12, t(449)) && !lookups.is_quiet(12, t(450)));
        assert_eq!(lookups.quiet_len(), 1, "one entry per bucket");
        // A link in the bucket ends the quiet, and the strikes with it.
        lookups.bucket_covered(12);
        assert!(!lookups.is_quiet(12, t(211)));
        lookups.fruitless(12, t(211), interval, max);
        assert!(!lookups.is_quiet(12, t(241)));
        // A zero maximum turns the backoff off.
        lookups.fruitless(20, t(0), interval, Duration::ZERO);
        assert!(!lookups.is_quiet(20, t(0)));
    }
}
