//! Sorted maps and vectors that keep their spare capacity small.
//!
//! A node keeps its links, connections and connect attempts for its whole life, and a
//! network holds many nodes: with `Vec`'s doubling growth a table of 33 links sits in room
//! for 64, and one that peaked at 60 during a join burst keeps room for 64 after it settles
//! at 30. These grow by a quarter at a time (still amortised O(1) per insert) and give back
//! room when removals leave much of it empty. Iteration order is the keys' order, as with a
//! `BTreeMap`, so swapping one for the other changes no output. The simulator uses the vector
//! helpers for its per-peer link ends.

use std::borrow::Borrow;
use std::ops::Deref;

use litemap::LiteMap;

/// Makes room for one more element, growing by a quarter (at least 4) rather than doubling.
pub fn reserve_one<T>(vec: &mut Vec<T>) {
    if vec.len() == vec.capacity() {
        vec.reserve_exact((vec.len() / 4).max(4));
    }
}

/// Whether a vector grown one element at a time by [`reserve_one`] from empty would be full
/// at `len`: at 0, 4, 8, 12, 16, 20, 25, 31, 38, ... A decision taken there depends on the
/// length alone, never on the allocation, which a shrunk or restored (snapshot) vector has
/// another of.
pub(crate) fn at_growth_point(len: usize) -> bool {
    let mut point = 0usize;
    while point < len {
        point += (point / 4).max(4);
    }
    point == len
}

/// Gives back spare room once more than half the length (at least 8) is unused.
pub fn shrink_slack<T>(vec: &mut Vec<T>) {
    let len = vec.len();
    if vec.capacity() - len > (len / 2).max(8) {
        vec.shrink_to(len + (len / 4).max(4));
    }
}

/// A sorted map (a [`LiteMap`] over a `Vec`) with compact growth; reads go through `Deref`.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "snapshot",
    serde(bound(deserialize = "K: Ord + serde::Deserialize<'de>, V: serde::Deserialize<'de>"))
)]
pub(crate) struct CompactMap<K, V>(LiteMap<K, V>);

impl<K: Ord, V> CompactMap<K, V> {
    pub(crate) const fn new() -> Self {
        CompactMap(LiteMap::new())
    }

    /// Inserts or replaces; returns the replaced value.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        if !self.0.contains_key(&key) {
            self.with_vec(reserve_one);
        }
        self.0.insert(key, value)
    }

    /// Inserts or replaces, as [`Self::insert`]; but when a new key arrives at one of the
    /// lengths where the map would grow ([`at_growth_point`]), first drops the entries that
    /// `keep` rejects, so that dead entries are reused rather than accumulated (amortised
    /// O(1) per insert). The length decides, not the vector's capacity: a map restored from
    /// a snapshot has no spare room and must prune at the same inserts as the original.
    /// Returns the replaced value.
    pub(crate) fn insert_pruning(
        &mut self,
        key: K,
        value: V,
        keep: impl FnMut(&K, &V) -> bool,
    ) -> Option<V> {
        if !self.0.contains_key(&key) {
            self.with_vec(|entries| {
                if at_growth_point(entries.len()) {
                    retain_pairs(entries, keep);
                }
                reserve_one(entries);
            });
        }
        self.0.insert(key, value)
    }

    /// Keeps the entries `keep` accepts, giving back room if that freed much.
    pub(crate) fn retain(&mut self, keep: impl FnMut(&K, &V) -> bool) {
        self.with_vec(|entries| {
            retain_pairs(entries, keep);
            shrink_slack(entries);
        });
    }

    pub(crate) fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        let removed = self.0.remove(key);
        if removed.is_some() {
            self.with_vec(shrink_slack);
        }
        removed
    }

    pub(crate) fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.0.get_mut(key)
    }

    pub(crate) fn clear(&mut self) {
        self.0 = LiteMap::new();
    }

    fn with_vec(&mut self, change: impl FnOnce(&mut Vec<(K, V)>)) {
        let mut entries = std::mem::replace(&mut self.0, LiteMap::new()).into_tuple_vec();
        change(&mut entries);
        // Still sorted: `change` only moves the entries to another allocation.
        self.0 = LiteMap::from_sorted_store_unchecked(entries);
    }
}

/// `Vec::retain` over key-value pairs; removing keeps the rest sorted.
fn retain_pairs<K, V>(entries: &mut Vec<(K, V)>, mut keep: impl FnMut(&K, &V) -> bool) {
    entries.retain(|(k, v)| keep(k, v));
}

impl<K: Ord, V> Default for CompactMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> IntoIterator for CompactMap<K, V> {
    type Item = (K, V);
    type IntoIter = std::vec::IntoIter<(K, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_tuple_vec().into_iter()
    }
}

impl<K, V> Deref for CompactMap<K, V> {
    type Target = LiteMap<K, V>;

    fn deref(&self) -> &LiteMap<K, V> {
        &self.0
    }
}

/// A sorted set kept in a vector, largest first, so the smallest element (the next timer)
/// is taken from the end in O(1); insert and remove are a binary search and a shift. A node
/// arms a handful of timers, and a `BTreeSet`'s first leaf alone is room for eleven.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "snapshot", derive(serde::Serialize, serde::Deserialize))]
pub(crate) struct CompactSet<T>(Vec<T>);

impl<T: Ord> CompactSet<T> {
    pub(crate) const fn new() -> Self {
        CompactSet(Vec::new())
    }

    fn position(&self, value: &T) -> Result<usize, usize> {
        self.0.binary_search_by(|probe| value.cmp(probe))
    }

    /// Adds `value`; false if it was already there.
    pub(crate) fn insert(&mut self, value: T) -> bool {
        match self.position(&value) {
            Ok(_) => false,
            Err(at) => {
                reserve_one(&mut self.0);
                self.0.insert(at, value);
                true
            }
        }
    }

    /// Removes `value`; false if it was not there.
    pub(crate) fn remove(&mut self, value: &T) -> bool {
        match self.position(value) {
            Ok(at) => {
                self.0.remove(at);
                shrink_slack(&mut self.0);
                true
            }
            Err(_) => false,
        }
    }

    /// The smallest element.
    pub(crate) fn first(&self) -> Option<&T> {
        self.0.last()
    }

    /// Removes and returns the smallest element.
    pub(crate) fn pop_first(&mut self) -> Option<T> {
        let first = self.0.pop();
        shrink_slack(&mut self.0);
        first
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn clear(&mut self) {
        self.0 = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_by_a_quarter_and_gives_back_room() {
        let mut map = CompactMap::new();
        for k in 0..40u32 {
            map.insert(k, k);
            let capacity = map.0.clone().into_tuple_vec().capacity();
            assert!(capacity >= map.len());
        }
        let full = std::mem::replace(&mut map.0, LiteMap::new()).into_tuple_vec();
        // Doubling would have reached 64.
        assert!(full.capacity() <= 50, "capacity {}", full.capacity());
        map.0 = LiteMap::from_sorted_store_unchecked(full);
        for k in 0..30u32 {
            assert_eq!(map.remove(&k), Some(k));
        }
        let rest = std::mem::replace(&mut map.0, LiteMap::new()).into_tuple_vec();
        assert!(rest.capacity() <= 10 + 8, "capacity {}", rest.capacity());
        assert_eq!(rest, (30..40).map(|k| (k, k)).collect::<Vec<_>>());
    }

    #[test]
    fn behaves_as_a_sorted_map() {
        let mut map = CompactMap::new();
        assert_eq!(map.insert(3, "c"), None);
        assert_eq!(map.insert(1, "a"), None);
        assert_eq!(map.insert(2, "b"), None);
        assert_eq!(map.insert(2, "B"), Some("b"));
        assert_eq!(map.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
        *map.get_mut(&1).unwrap() = "A";
        assert_eq!(map.get(&1), Some(&"A"));
        assert_eq!(map.remove(&9), None);
        map.clear();
        assert!(map.is_empty());
    }

    #[test]
    fn a_full_map_drops_rejected_entries_before_growing() {
        let mut map = CompactMap::new();
        for k in 0..4u32 {
            map.insert_pruning(k, k, |_, _| true);
        }
        let capacity = |map: &mut CompactMap<u32, u32>| {
            let mut capacity = 0;
            map.with_vec(|v| capacity = v.capacity());
            capacity
        };
        assert_eq!(capacity(&mut map), 4);
        // Full: the odd keys are rejected, so the new key takes their room.
        map.insert_pruning(10, 10, |k, _| k % 2 == 0);
        assert_eq!(map.keys().copied().collect::<Vec<_>>(), [0, 2, 10]);
        assert_eq!(capacity(&mut map), 4);
        // Not full: nothing is pruned, whatever `keep` says.
        map.insert_pruning(11, 11, |_, _| false);
        assert_eq!(map.keys().copied().collect::<Vec<_>>(), [0, 2, 10, 11]);
        // Replacing a present key never prunes.
        assert_eq!(map.insert_pruning(11, 12, |_, _| false), Some(11));
        assert_eq!(map.len(), 4);
        map.retain(|k, _| *k >= 10);
        assert_eq!(map.keys().copied().collect::<Vec<_>>(), [10, 11]);
    }

    #[test]
    fn pruning_depends_on_the_length_not_the_capacity() {
        let points: Vec<usize> = (0..50).filter(|&n| at_growth_point(n)).collect();
        assert_eq!(points, [0, 4, 8, 12, 16, 20, 25, 31, 38, 47]);
        // The same inserts into a map with spare room and into one without any, as a map
        // restored from a snapshot is: the same entries are pruned at the same inserts.
        let mut roomy = CompactMap::new();
        roomy.with_vec(|v| v.reserve_exact(100));
        let mut tight = CompactMap::new();
        for k in 0..80u32 {
            let keep = |key: &u32, _: &u32| key % 3 != 0 || key + 10 > k;
            roomy.insert_pruning(k, k, keep);
            tight.insert_pruning(k, k, keep);
            assert!(roomy.keys().eq(tight.keys()), "after inserting {k}");
            tight.with_vec(|v| v.shrink_to_fit());
        }
        assert!(roomy.len() < 80, "something was pruned");
    }

    #[test]
    fn a_compact_set_pops_in_order_like_a_btree_set() {
        let mut set = CompactSet::new();
        let mut reference = std::collections::BTreeSet::new();
        // A fixed pseudo-random walk of inserts, removes and pops.
        let mut x = 7u32;
        for step in 0..2_000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let value = (x >> 16) % 64;
            match step % 5 {
                0 | 1 => assert_eq!(set.insert(value), reference.insert(value)),
                2 => assert_eq!(set.remove(&value), reference.remove(&value)),
                3 => assert_eq!(set.pop_first(), reference.pop_first()),
                _ => assert_eq!(set.first(), reference.first()),
            }
            assert_eq!(set.len(), reference.len());
        }
        set.clear();
        assert_eq!(set.first(), None);
    }

    #[test]
    fn vectors_grow_and_shrink_with_slack() {
        let mut v: Vec<u8> = Vec::new();
        for i in 0..100 {
            reserve_one(&mut v);
            let before = v.capacity();
            v.push(i);
            assert_eq!(v.capacity(), before, "reserve_one made room");
        }
        assert!(v.capacity() <= 125, "capacity {}", v.capacity());
        v.truncate(10);
        shrink_slack(&mut v);
        assert!(v.capacity() <= 14, "capacity {}", v.capacity());
    }
}
