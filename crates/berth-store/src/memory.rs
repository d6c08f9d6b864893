//! The in-memory image of the store that serves every read, and the overlay
//! view a batch of mutations sees before it is committed.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::{KeyValue, ReadView};

pub(crate) type KeyMap = BTreeMap<String, KeyValue>;

/// Pending writes of the batch being committed: `None` marks a delete.
pub(crate) type Overlay = BTreeMap<String, Option<KeyValue>>;

fn start_bound<'a>(prefix: &'a str, start_after: Option<&'a str>) -> Bound<&'a str> {
    match start_after {
        Some(after) if after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(prefix),
    }
}

pub(crate) fn range_map(
    map: &KeyMap,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
) -> Vec<KeyValue> {
    map.range::<str, _>((start_bound(prefix, start_after), Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(prefix))
        .take(limit)
        .map(|(_, v)| v.clone())
        .collect()
}

pub(crate) fn count_map(map: &KeyMap, prefix: &str) -> usize {
    map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(prefix))
        .count()
}

/// The committed map with a batch's pending writes laid over it.
pub(crate) struct OverlayView<'a> {
    pub base: &'a KeyMap,
    pub overlay: &'a Overlay,
}

impl ReadView for OverlayView<'_> {
    fn get(&self, key: &str) -> Option<KeyValue> {
        match self.overlay.get(key) {
            Some(pending) => pending.clone(),
            None => self.base.get(key).cloned(),
        }
    }

    fn range(&self, prefix: &str, start_after: Option<&str>, limit: usize) -> Vec<KeyValue> {
        let bounds = (start_bound(prefix, start_after), Bound::Unbounded);
        let mut base = self
            .base
            .range::<str, _>(bounds)
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        let mut pending = self
            .overlay
            .range::<str, _>(bounds)
            .take_while(|(k, _)| k.starts_with(prefix))
            .peekable();
        let mut out = Vec::new();
        while out.len() < limit {
            let take_base = match (base.peek(), pending.peek()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((bk, _)), Some((pk, _))) => {
                    if bk < pk {
                        true
                    } else {
                        if bk == pk {
                            base.next();
                        }
                        false
                    }
                }
            };
            if take_base {
                if let Some((_, kv)) = base.next() {
                    out.push(kv.clone());
                }
            } else if let Some((_, Some(kv))) = pending.next() {
                out.push(kv.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn kv(key: &str, rev: u64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::from(key.to_string()),
            create_revision: rev,
            mod_revision: rev,
            version: 1,
        }
    }

    #[test]
    fn overlay_range_merges_in_order_and_hides_deletes() {
        let mut base = KeyMap::new();
        for (i, k) in ["/a/1", "/a/3", "/a/5", "/b/1"].iter().enumerate() {
            base.insert(k.to_string(), kv(k, i as u64 + 1));
        }
        let mut overlay = Overlay::new();
        overlay.insert("/a/2".into(), Some(kv("/a/2", 9)));
        overlay.insert("/a/3".into(), None);
        overlay.insert("/a/5".into(), Some(kv("/a/5", 10)));
        let view = OverlayView {
            base: &base,
            overlay: &overlay,
        };
        let keys: Vec<_> = view
            .range("/a/", None, 100)
            .into_iter()
            .map(|kv| (kv.key, kv.mod_revision))
            .collect();
        assert_eq!(
            keys,
            vec![("/a/1".into(), 1), ("/a/2".into(), 9), ("/a/5".into(), 10)]
        );
        let after: Vec<_> = view
            .range("/a/", Some("/a/2"), 1)
            .into_iter()
            .map(|kv| kv.key)
            .collect();
        assert_eq!(after, vec!["/a/5".to_string()]);
        assert!(view.get("/a/3").is_none());
    }
}
