//! A bounded set of work items in progress, shared by the processes that work on several items
//! at once (the previews): an item is taken at most once at a time, and at most `cap` at all.
//! A taken slot is given back when it is dropped, so a panicking or failing task frees it too.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

pub struct Slots<K: Eq + Hash + Clone> {
    cap: usize,
    taken: Arc<Mutex<HashSet<K>>>,
}

/// One item in progress; dropping it gives the slot back.
pub struct Slot<K: Eq + Hash + Clone> {
    key: K,
    taken: Arc<Mutex<HashSet<K>>>,
}

impl<K: Eq + Hash + Clone> Slots<K> {
    pub fn new(cap: usize) -> Self {
        Slots { cap, taken: Arc::default() }
    }

    /// A slot for `key`, unless it is in progress already or every slot is taken.
    pub fn take(&self, key: K) -> Option<Slot<K>> {
        let mut taken = self.taken.lock().expect("slots lock");
        if taken.len() >= self.cap || !taken.insert(key.clone()) {
            return None;
        }
        Some(Slot { key, taken: self.taken.clone() })
    }
}

impl<K: Eq + Hash + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        self.taken.lock().expect("slots lock").remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_is_worked_on_once_at_a_time_and_at_most_cap_at_all() {
        let slots = Slots::new(2);
        let a = slots.take("a").expect("a free slot");
        assert!(slots.take("a").is_none(), "the same item twice");
        let _b = slots.take("b").expect("a second slot");
        assert!(slots.take("c").is_none(), "past the cap");
        drop(a);
        assert!(slots.take("c").is_some(), "a dropped slot is given back");
    }
}
