//! A Kademlia k-bucket table with the semantics of the JS `k-bucket` package (3.x) that the
//! original uses for its routing table and its candidate list.
//!
//! The JS package keeps a binary tree in which only the leaf holding our own id may split, so
//! its leaves are exactly: one "far" bucket for every bit position `i < depth` (contacts that
//! first differ from our id at bit `i`) and one "near" bucket for contacts that share the first
//! `depth` bits with us. We store that as one vector of contacts, bucket after bucket, indexed
//! by shared-prefix length.
//! A full far bucket refuses the newcomer (the JS package emits `ping` and drops it); a full
//! near bucket splits. Within a bucket, contacts are ordered least recently seen first: seeing a
//! contact again moves it to the end, as the JS arbiter does.

use smallvec::SmallVec;

use crate::id::{Distance, ID_BITS, PeerId};

/// A contact and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub struct Entry<V> {
    /// The contact's id.
    pub id: PeerId,
    /// Caller data kept with it.
    pub value: V,
}

/// What [`KBucket::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// The contact was new and stored.
    Added,
    /// The contact was known; its value was replaced and it became the most recently seen.
    Updated,
    /// The contact's bucket is full and may not split: it was refused. `bucket` is the
    /// bucket's index (its shared-prefix length with our id).
    Full {
        /// Index of the full bucket.
        bucket: usize,
    },
    /// The contact is our own id, which is never stored.
    OwnId,
}

/// A k-bucket routing table.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub struct KBucket<V> {
    local: PeerId,
    k: usize,
    /// Every contact, bucket after bucket: bucket `i` is `entries[ends[i - 1]..ends[i]]`.
    /// Bucket `i < depth` holds contacts whose id first differs from ours at bit `i`; the last
    /// bucket (index `depth`) holds everything sharing at least `depth` bits. One allocation
    /// for the whole table, not one per bucket: a million-peer network's candidate tables
    /// have some 18 buckets each, and a vector per bucket cost 40 bytes of header and
    /// allocator overhead apiece.
    entries: Vec<Entry<V>>,
    /// One past each bucket's last entry; `ends.len()` is `depth + 1`.
    ends: Vec<u32>,
}

impl<V> KBucket<V> {
    /// An empty table around `local` with `k` contacts per bucket (`k >= 1`).
    pub fn new(local: PeerId, k: usize) -> Self {
        KBucket {
            local,
            k: k.max(1),
            entries: Vec::new(),
            ends: vec![0],
        }
    }

    /// Our own id.
    pub fn local(&self) -> &PeerId {
        &self.local
    }

    /// Contacts per bucket.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of stored contacts.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Index of the near bucket: how many times the table has split.
    pub fn depth(&self) -> usize {
        self.ends.len() - 1
    }

    /// The positions of bucket `index` (`index <= depth`) in `entries`.
    fn range(&self, index: usize) -> core::ops::Range<usize> {
        let start = match index {
            0 => 0,
            i => self.ends[i - 1] as usize,
        };
        start..self.ends[index] as usize
    }

    /// The bucket index `id` belongs to.
    pub fn bucket_index(&self, id: &PeerId) -> usize {
        self.local.common_prefix_len(id).min(self.depth())
    }

    /// The contacts of bucket `index`, least recently seen first.
    pub fn bucket(&self, index: usize) -> &[Entry<V>] {
        if index < self.ends.len() {
            &self.entries[self.range(index)]
        } else {
            &[]
        }
    }

    /// Inserts or refreshes a contact following the JS package's rules.
    pub fn insert(&mut self, id: PeerId, value: V) -> Insert {
        match self.try_insert(id, value) {
            Ok(result) => result,
            Err((bucket, _refused)) => Insert::Full { bucket },
        }
    }

    /// Like [`insert`](Self::insert), but a full bucket makes room by evicting its least
    /// recently seen contact, which is returned.
    pub fn insert_evicting(&mut self, id: PeerId, value: V) -> (Insert, Option<Entry<V>>) {
        match self.try_insert(id, value) {
            Ok(result) => (result, None),
            Err((bucket, value)) => {
                // The least recently seen goes; the newcomer is the most recently seen.
                let range = self.range(bucket);
                self.entries[range.clone()].rotate_left(1);
                let evicted =
                    core::mem::replace(&mut self.entries[range.end - 1], Entry { id, value });
                (Insert::Added, Some(evicted))
            }
        }
    }

    /// Insert, handing the value back with the bucket index when the bucket is full.
    fn try_insert(&mut self, id: PeerId, value: V) -> Result<Insert, (usize, V)> {
        if id == self.local {
            return Ok(Insert::OwnId);
        }
        loop {
            let index = self.bucket_index(&id);
            let range = self.range(index);
            let bucket = &mut self.entries[range.clone()];
            if let Some(pos) = bucket.iter().position(|e| e.id == id) {
                bucket[pos..].rotate_left(1);
                bucket[bucket.len() - 1].value = value;
                return Ok(Insert::Updated);
            }
            if range.len() < self.k {
                if self.entries.len() == self.entries.capacity() {
                    // Grow by one bucket's worth, not by doubling: the table is most of an
                    // idle node, and the room left over is at most one bucket.
                    self.entries.reserve_exact(self.k.clamp(4, 64));
                }
                self.entries.insert(range.end, Entry { id, value });
                for end in &mut self.ends[index..] {
                    *end += 1;
                }
                return Ok(Insert::Added);
            }
            // At depth 159 the near bucket can only hold the one id differing in the last bit.
            if index < self.depth() || self.depth() + 1 >= ID_BITS {
                return Err((index, value));
            }
            self.split();
        }
    }

    /// Splits the near bucket at the current depth.
    fn split(&mut self) {
        let depth = self.depth();
        let start = self.range(depth).start;
        // The near bucket is the last: stably move its far half in front of its near half.
        type Half<V> = SmallVec<[Entry<V>; 32]>;
        let (far, near): (Half<V>, Half<V>) = self
            .entries
            .drain(start..)
            .partition(|e| e.id.bit(depth) != self.local.bit(depth));
        self.entries.extend(far);
        self.ends[depth] = self.entries.len() as u32;
        self.entries.extend(near);
        // Compact growth: doubling would leave a table split 17 times with room for 32.
        crate::compact::reserve_one(&mut self.ends);
        self.ends.push(self.entries.len() as u32);
    }

    /// Removes a contact, returning its value.
    pub fn remove(&mut self, id: &PeerId) -> Option<V> {
        let index = self.bucket_index(id);
        let range = self.range(index);
        let pos = self.entries[range.clone()]
            .iter()
            .position(|e| e.id == *id)?;
        for end in &mut self.ends[index..] {
            *end -= 1;
        }
        Some(self.entries.remove(range.start + pos).value)
    }

    /// The value stored for `id`.
    pub fn get(&self, id: &PeerId) -> Option<&V> {
        self.bucket(self.bucket_index(id))
            .iter()
            .find(|e| e.id == *id)
            .map(|e| &e.value)
    }

    /// The value stored for `id`, mutably (does not change recency).
    pub fn get_mut(&mut self, id: &PeerId) -> Option<&mut V> {
        let range = self.range(self.bucket_index(id));
        self.entries[range]
            .iter_mut()
            .find(|e| e.id == *id)
            .map(|e| &mut e.value)
    }

    /// Whether `id` is stored.
    pub fn contains(&self, id: &PeerId) -> bool {
        self.get(id).is_some()
    }

    /// All contacts, bucket by bucket (farthest bucket first), least recently seen first.
    pub fn iter(&self) -> impl Iterator<Item = &Entry<V>> {
        self.entries.iter()
    }

    /// Contacts in increasing XOR distance from `target`, computed lazily bucket by bucket:
    /// each bucket covers one contiguous range of distances, so only one bucket at a time is
    /// sorted (at most `k` entries), never the whole table.
    pub fn closest_iter<'a>(&'a self, target: &PeerId) -> Closest<'a, V> {
        Closest {
            table: self,
            target: *target,
            xor: self.local.distance(target),
            phase: Phase::Ascending(0),
            current: SmallVec::new(),
            bucket: 0,
        }
    }

    /// The `n` contacts closest to `target`, nearest first.
    pub fn closest(&self, target: &PeerId, n: usize) -> Vec<&Entry<V>> {
        self.closest_iter(target).take(n).collect()
    }
}

fn xor_bit(xor: &Distance, index: usize) -> bool {
    xor.bit(index)
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Far buckets `i` where `target` differs from us at bit `i`, ascending: these are the
    /// buckets nearer to the target than our own neighbourhood.
    Ascending(usize),
    /// The near bucket.
    Near,
    /// Far buckets where `target` agrees with us at bit `i`, descending.
    Descending(usize),
    Done,
}

/// Iterator returned by [`KBucket::closest_iter`].
pub struct Closest<'a, V> {
    table: &'a KBucket<V>,
    target: PeerId,
    xor: Distance,
    phase: Phase,
    /// The current bucket's entries (distance to the target, index), farthest first so `pop`
    /// yields the nearest. Distances are computed once per entry, not per comparison.
    current: SmallVec<[(Distance, u16); 32]>,
    bucket: usize,
}

impl<V> Closest<'_, V> {
    /// Advances to the next bucket in XOR order; false when none is left.
    fn next_bucket(&mut self) -> bool {
        let depth = self.table.depth();
        loop {
            let index = match self.phase {
                Phase::Ascending(i) if i < depth => {
                    self.phase = Phase::Ascending(i + 1);
                    if !xor_bit(&self.xor, i) {
                        continue;
                    }
                    i
                }
                Phase::Ascending(_) => {
                    self.phase = Phase::Near;
                    continue;
                }
                Phase::Near => {
                    self.phase = Phase::Descending(depth);
                    depth
                }
                Phase::Descending(0) => {
                    self.phase = Phase::Done;
                    continue;
                }
                Phase::Descending(i) => {
                    self.phase = Phase::Descending(i - 1);
                    if xor_bit(&self.xor, i - 1) {
                        continue;
                    }
                    i - 1
                }
                Phase::Done => return false,
            };
            let bucket = self.table.bucket(index);
            if bucket.is_empty() {
                continue;
            }
            self.bucket = index;
            self.current.clear();
            let target = self.target;
            self.current.extend(
                (0..bucket.len() as u16).map(|i| (bucket[usize::from(i)].id.distance(&target), i)),
            );
            // Ids in a table are distinct, so distances are too: the order is total.
            self.current
                .sort_unstable_by_key(|&(distance, _)| core::cmp::Reverse(distance));
            return true;
        }
    }
}

impl<'a, V> Iterator for Closest<'a, V> {
    type Item = &'a Entry<V>;

    fn next(&mut self) -> Option<&'a Entry<V>> {
        loop {
            if let Some((_, i)) = self.current.pop() {
                return Some(&self.table.bucket(self.bucket)[usize::from(i)]);
            }
            if !self.next_bucket() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::id::test_id as id;

    #[test]
    fn never_stores_own_id() {
        let me = id(0, 0);
        let mut t = KBucket::new(me, 2);
        assert_eq!(t.insert(me, ()), Insert::OwnId);
        assert!(t.is_empty());
    }

    #[test]
    fn far_bucket_refuses_when_full_and_near_bucket_splits() {
        let me = id(0x00, 0);
        let mut t = KBucket::new(me, 2);
        // Three contacts in the far half (first bit 1).
        assert_eq!(t.insert(id(0x80, 1), ()), Insert::Added);
        assert_eq!(t.insert(id(0x81, 1), ()), Insert::Added);
        // Root is full: it splits; the far half (bit 0 set) becomes a no-split bucket.
        assert_eq!(t.insert(id(0x82, 1), ()), Insert::Full { bucket: 0 });
        assert_eq!(t.depth(), 1);
        // Contacts near us still fit: the near bucket keeps splitting as needed.
        assert_eq!(t.insert(id(0x01, 1), ()), Insert::Added);
        assert_eq!(t.insert(id(0x02, 1), ()), Insert::Added);
        assert_eq!(t.insert(id(0x40, 1), ()), Insert::Added);
        assert_eq!(t.len(), 5);
        assert!(t.depth() >= 2);
    }

    #[test]
    fn seeing_a_contact_again_makes_it_most_recent() {
        let me = id(0, 0);
        let mut t = KBucket::new(me, 3);
        for last in 1..=3 {
            t.insert(id(0x80, last), last);
        }
        assert_eq!(t.insert(id(0x80, 1), 10), Insert::Updated);
        let order: Vec<u8> = t.bucket(0).iter().map(|e| e.id.as_bytes()[19]).collect();
        assert_eq!(order, vec![2, 3, 1]);
        assert_eq!(t.get(&id(0x80, 1)), Some(&10));
    }

    #[test]
    fn eviction_replaces_least_recently_seen() {
        let me = id(0, 0);
        let mut t = KBucket::new(me, 2);
        t.insert(id(0x80, 1), ());
        t.insert(id(0x80, 2), ());
        t.insert(id(0x01, 1), ());
        let (result, evicted) = t.insert_evicting(id(0x80, 3), ());
        assert_eq!(result, Insert::Added);
        assert_eq!(evicted.map(|e| e.id), Some(id(0x80, 1)));
        assert!(t.contains(&id(0x80, 3)));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn remove_and_get() {
        let me = id(0, 0);
        let mut t = KBucket::new(me, 20);
        t.insert(id(5, 5), 7);
        assert_eq!(t.remove(&id(5, 5)), Some(7));
        assert_eq!(t.remove(&id(5, 5)), None);
        assert!(t.is_empty());
    }

    fn arb_id() -> impl Strategy<Value = PeerId> {
        // Bias towards shared prefixes with the zero-ish local id so deep splits happen.
        (any::<[u8; 20]>(), 0usize..24).prop_map(|(mut b, zeros)| {
            for byte in b.iter_mut().take(zeros / 8) {
                *byte = 0;
            }
            if zeros % 8 != 0 && zeros / 8 < 20 {
                b[zeros / 8] &= 0xff >> (zeros % 8);
            }
            PeerId::from_bytes(b)
        })
    }

    #[test]
    fn the_bucket_list_grows_compactly() {
        let mut rng =
            <rand_xoshiro::Xoshiro256PlusPlus as rand_core::SeedableRng>::seed_from_u64(5);
        let local = PeerId::random(&mut rng);
        let mut t = KBucket::new(local, 1);
        // One contact sharing each prefix length: every insert splits the near bucket.
        for bucket in 0..24 {
            t.insert(
                crate::discovery::random_id_in_bucket(&local, bucket, &mut rng),
                (),
            );
        }
        assert_eq!(t.depth(), 23);
        // Doubling would have left room for 32.
        assert!(t.ends.capacity() <= 30, "capacity {}", t.ends.capacity());
    }

    /// The table as the JS package lays it out, one vector per bucket: the reference the
    /// flat layout must match entry for entry.
    struct Reference {
        local: PeerId,
        k: usize,
        buckets: Vec<Vec<PeerId>>,
    }

    impl Reference {
        fn index(&self, id: &PeerId) -> usize {
            self.local.common_prefix_len(id).min(self.buckets.len() - 1)
        }

        /// Returns the evicted id, if any.
        fn insert(&mut self, id: PeerId, evict: bool) -> Option<PeerId> {
            if id == self.local {
                return None;
            }
            loop {
                let depth = self.buckets.len() - 1;
                let index = self.index(&id);
                let bucket = &mut self.buckets[index];
                if let Some(pos) = bucket.iter().position(|e| *e == id) {
                    bucket.remove(pos);
                    bucket.push(id);
                    return None;
                }
                if bucket.len() < self.k {
                    bucket.push(id);
                    return None;
                }
                if index < depth || depth + 1 >= ID_BITS {
                    if !evict {
                        return None;
                    }
                    let evicted = bucket.remove(0);
                    bucket.push(id);
                    return Some(evicted);
                }
                let near = self.buckets.pop().unwrap_or_default();
                let (far, near) = near
                    .into_iter()
                    .partition(|e| e.bit(depth) != self.local.bit(depth));
                self.buckets.push(far);
                self.buckets.push(near);
            }
        }

        fn remove(&mut self, id: &PeerId) {
            let index = self.index(id);
            self.buckets[index].retain(|e| e != id);
        }
    }

    proptest! {
        #[test]
        fn matches_the_bucket_per_vector_layout(
            local in arb_id(),
            ops in proptest::collection::vec((arb_id(), 0u8..4), 0..400),
            k in 1usize..25,
        ) {
            let mut table = KBucket::new(local, k);
            let mut reference = Reference { local, k, buckets: vec![Vec::new()] };
            let mut seen: Vec<PeerId> = Vec::new();
            for (id, op) in ops {
                match op {
                    0 => {
                        table.insert(id, ());
                        reference.insert(id, false);
                    }
                    1 => {
                        let evicted = table.insert_evicting(id, ()).1.map(|e| e.id);
                        prop_assert_eq!(evicted, reference.insert(id, true));
                    }
                    // Again, or gone: ids already seen, so updates and removals happen.
                    2 if !seen.is_empty() => {
                        let again = seen[usize::from(id.as_bytes()[19]) % seen.len()];
                        table.insert(again, ());
                        reference.insert(again, false);
                    }
                    _ if !seen.is_empty() => {
                        let gone = seen[usize::from(id.as_bytes()[19]) % seen.len()];
                        table.remove(&gone);
                        reference.remove(&gone);
                    }
                    _ => {}
                }
                seen.push(id);
                prop_assert_eq!(table.depth() + 1, reference.buckets.len());
                for (i, bucket) in reference.buckets.iter().enumerate() {
                    let got: Vec<PeerId> = table.bucket(i).iter().map(|e| e.id).collect();
                    prop_assert_eq!(&got, bucket);
                }
                prop_assert_eq!(table.len(), reference.buckets.iter().map(Vec::len).sum::<usize>());
            }
        }

        #[test]
        fn closest_equals_brute_force(
            local in arb_id(),
            ids in proptest::collection::vec(arb_id(), 0..300),
            target in arb_id(),
            k in 1usize..25,
            n in 0usize..80,
        ) {
            let mut t = KBucket::new(local, k);
            for id in &ids {
                t.insert(*id, ());
            }
            let mut all: Vec<PeerId> = t.iter().map(|e| e.id).collect();
            all.sort_by_key(|id| id.distance(&target));
            all.truncate(n);
            let got: Vec<PeerId> = t.closest(&target, n).into_iter().map(|e| e.id).collect();
            prop_assert_eq!(got, all);
        }

        #[test]
        fn bounded_and_never_self(
            local in arb_id(),
            ids in proptest::collection::vec(arb_id(), 0..400),
            removals in proptest::collection::vec(any::<prop::sample::Index>(), 0..50),
            k in 1usize..25,
        ) {
            let mut t = KBucket::new(local, k);
            let mut with_self = ids.clone();
            with_self.push(local);
            for id in &with_self {
                t.insert(*id, ());
            }
            for r in &removals {
                if !ids.is_empty() {
                    t.remove(&ids[r.index(ids.len())]);
                }
            }
            prop_assert!(!t.contains(&local));
            prop_assert_eq!(t.iter().count(), t.len());
            for i in 0..=t.depth() {
                prop_assert!(t.bucket(i).len() <= k);
                for e in t.bucket(i) {
                    prop_assert_eq!(t.bucket_index(&e.id), i);
                }
            }
            prop_assert!(t.len() <= k * (t.depth() + 1));
        }
    }
}
