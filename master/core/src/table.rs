//! `Table`: soft state addressed by a dense `u32` index, found by its string id through one
//! ordered index. The hot paths (an allocation pass, offers, filters, declines) carry indexes and
//! never hash or compare a string id; the string ids stay at the wire boundary and in the
//! registry. A removed entry's index is reused, so whoever keeps an index (offers, filters,
//! timers) must drop it when the entry goes.

use std::collections::BTreeMap;

pub(crate) struct Table<K, V> {
    slots: Vec<Option<(K, V)>>,
    free: Vec<u32>,
    /// Ordered by id, so iteration follows the registry's order.
    index: BTreeMap<K, u32>,
}

impl<K, V> Default for Table<K, V> {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            free: Vec::new(),
            index: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone, V> Table<K, V> {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn ix(&self, key: &K) -> Option<u32> {
        self.index.get(key).copied()
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.index.contains_key(key)
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.at(self.ix(key)?)
    }

    pub fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let ix = self.ix(key)?;
        self.at_mut(ix)
    }

    pub fn at(&self, ix: u32) -> Option<&V> {
        self.slots.get(ix as usize)?.as_ref().map(|(_, v)| v)
    }

    pub fn at_mut(&mut self, ix: u32) -> Option<&mut V> {
        self.slots.get_mut(ix as usize)?.as_mut().map(|(_, v)| v)
    }

    /// The id of the entry at `ix`.
    pub fn key(&self, ix: u32) -> Option<&K> {
        self.slots.get(ix as usize)?.as_ref().map(|(k, _)| k)
    }

    /// Inserts a new entry (the caller checked it is absent) and returns its index.
    pub fn insert(&mut self, key: K, value: V) -> u32 {
        if let Some(&ix) = self.index.get(&key) {
            self.slots[ix as usize] = Some((key, value));
            return ix;
        }
        let ix = match self.free.pop() {
            Some(ix) => {
                self.slots[ix as usize] = Some((key.clone(), value));
                ix
            }
            None => {
                // Callers bound the number of entries (`limits`) far below u32::MAX.
                let ix = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Some((key.clone(), value)));
                ix
            }
        };
        self.index.insert(key, ix);
        ix
    }

    pub fn remove(&mut self, key: &K) -> Option<(u32, V)> {
        let ix = self.index.remove(key)?;
        let (_, v) = self.slots.get_mut(ix as usize)?.take()?;
        self.free.push(ix);
        Some((ix, v))
    }

    /// Entries in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &K, &V)> {
        self.index.iter().filter_map(|(k, ix)| {
            self.slots
                .get(*ix as usize)?
                .as_ref()
                .map(|(_, v)| (*ix, k, v))
        })
    }

    /// Values in id order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, _, v)| v)
    }
}
