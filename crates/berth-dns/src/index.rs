//! The in-memory index of the DNS registry: every zone and record set of
//! the store's `dns/` keys, turned into ready-to-send DNS records and kept
//! current from the store's watch. Lookups read an immutable [`Snapshot`]
//! (one `Arc` clone per query) and never touch the store; a change builds
//! the next snapshot from the previous one, rebuilding only the names it
//! touched.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use berth_model::dns_registry::{
    self, HostedZone, RecordSet, RecordType as RegistryType, Routing, RECORDS_PREFIX, ZONES_PREFIX,
};
use berth_store::{Event, EventKind, Revision, Store};
use futures::FutureExt;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA, SRV};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

/// The name server every zone's SOA and NS records name.
const NAME_SERVER: &str = "ns.berth.internal.";
/// The SOA's responsible mailbox.
const HOSTMASTER: &str = "hostmaster.berth.internal.";
/// The TTL of the apex's NS record (Route 53's default for NS records).
const NS_TTL: u32 = 172_800;

/// One published record set, ready to answer.
#[derive(Debug)]
pub(crate) struct SetEntry {
    pub(crate) records: Vec<Record>,
    /// The lower-cased targets of SRV and CNAME records, in record order,
    /// for the additional section and CNAME chasing.
    pub(crate) targets: Vec<LowerName>,
    pub(crate) weight: u32,
    pub(crate) healthy: bool,
}

/// The sets of one name and type.
#[derive(Debug)]
pub(crate) struct TypeEntry {
    pub(crate) record_type: RecordType,
    pub(crate) routing: Routing,
    pub(crate) sets: Vec<SetEntry>,
}

/// Everything a name has. No types: an empty non-terminal (a name with
/// names below it but no records, e.g. `_tcp.corp.local`), which exists.
#[derive(Debug, Default)]
pub(crate) struct NameEntry {
    pub(crate) types: Vec<TypeEntry>,
}

impl NameEntry {
    pub(crate) fn get(&self, record_type: RecordType) -> Option<&TypeEntry> {
        self.types.iter().find(|t| t.record_type == record_type)
    }
}

/// A zone's apex records.
#[derive(Debug)]
pub(crate) struct ZoneEntry {
    pub(crate) apex: LowerName,
    pub(crate) soa: Record,
    pub(crate) ns: Record,
}

/// The registry at one revision, as the server answers from it.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Zones, most labels first, so the first that contains a name is the
    /// closest enclosing one.
    pub(crate) zones: Vec<ZoneEntry>,
    pub(crate) names: HashMap<LowerName, Arc<NameEntry>>,
    revision: Revision,
}

impl Snapshot {
    /// The store revision this snapshot reflects.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The number of names (with records, or with names below them).
    pub fn name_count(&self) -> usize {
        self.names.len()
    }

    /// The closest Berth zone containing `name`.
    pub(crate) fn zone_of(&self, name: &LowerName) -> Option<&ZoneEntry> {
        self.zones.iter().find(|z| z.apex.zone_of(name))
    }
}

/// The index the server answers from: the current snapshot.
#[derive(Debug, Default)]
pub struct Index {
    current: RwLock<Arc<Snapshot>>,
}

impl Index {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn publish(&self, snapshot: Arc<Snapshot>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = snapshot;
    }
}

/// The registry as stored, kept by the follower to rebuild what a change
/// touches.
#[derive(Default)]
pub(crate) struct Raw {
    zones: BTreeMap<String, HostedZone>,
    /// Record sets by owner name, then by key.
    sets: HashMap<String, BTreeMap<String, RecordSet>>,
    /// How many names with sets lie strictly below each name.
    below: HashMap<String, usize>,
}

/// What a batch of events touched.
#[derive(Default)]
pub(crate) struct Touched {
    names: HashSet<String>,
    zones: bool,
}

/// The names strictly above `name` (`a.b.c` → `b.c`, `c`).
fn ancestors(name: &str) -> impl Iterator<Item = &str> {
    name.match_indices('.').map(move |(i, _)| &name[i + 1..])
}

impl Raw {
    /// Reads every zone and record set of the store.
    pub(crate) fn load(store: &dyn Store) -> Raw {
        let mut raw = Raw::default();
        let mut touched = Touched::default();
        for prefix in [ZONES_PREFIX, RECORDS_PREFIX] {
            let mut after: Option<String> = None;
            loop {
                let page = store.range(prefix, after.as_deref(), 1024);
                let Some(last) = page.last() else { break };
                after = Some(last.key.clone());
                for kv in page {
                    raw.put(&kv.key, &kv.value, &mut touched);
                }
            }
        }
        raw
    }

    /// Applies one store event.
    pub(crate) fn apply(&mut self, event: &Event, touched: &mut Touched) {
        match event.kind {
            EventKind::Put => self.put(&event.kv.key, &event.kv.value, touched),
            EventKind::Delete => self.delete(&event.kv.key, touched),
        }
    }

    fn put(&mut self, key: &str, value: &[u8], touched: &mut Touched) {
        if let Some(id) = key.strip_prefix(ZONES_PREFIX) {
            match serde_json::from_slice::<HostedZone>(value) {
                Ok(zone) => {
                    self.zones.insert(id.to_string(), zone);
                    touched.zones = true;
                }
                Err(e) => tracing::warn!(key, error = %e, "DNS zone cannot be decoded; ignored"),
            }
            return;
        }
        let Some((_, name, _, _)) = dns_registry::parse_record_key(key) else {
            return;
        };
        let set = match serde_json::from_slice::<RecordSet>(value) {
            Ok(set) => set,
            Err(e) => {
                tracing::warn!(key, error = %e, "DNS record set cannot be decoded; ignored");
                return;
            }
        };
        let name = name.to_string();
        let present = self.sets.contains_key(&name);
        self.sets
            .entry(name.clone())
            .or_default()
            .insert(key.to_string(), set);
        if !present {
            self.count_below(&name, true, touched);
        }
        touched.names.insert(name);
    }

    fn delete(&mut self, key: &str, touched: &mut Touched) {
        if let Some(id) = key.strip_prefix(ZONES_PREFIX) {
            if self.zones.remove(id).is_some() {
                touched.zones = true;
            }
            return;
        }
        let Some((_, name, _, _)) = dns_registry::parse_record_key(key) else {
            return;
        };
        let Some(sets) = self.sets.get_mut(name) else {
            return;
        };
        sets.remove(key);
        if sets.is_empty() {
            self.sets.remove(name);
            let name = name.to_string();
            self.count_below(&name, false, touched);
        }
        touched.names.insert(name.to_string());
    }

    /// A name appeared (`added`) or went: its ancestors' counts follow, and
    /// an ancestor that starts or stops being an empty non-terminal is
    /// touched.
    fn count_below(&mut self, name: &str, added: bool, touched: &mut Touched) {
        for ancestor in ancestors(name) {
            let count = self.below.entry(ancestor.to_string()).or_default();
            if added {
                *count += 1;
                if *count == 1 {
                    touched.names.insert(ancestor.to_string());
                }
            } else {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.below.remove(ancestor);
                    touched.names.insert(ancestor.to_string());
                }
            }
        }
    }

    /// A whole snapshot.
    pub(crate) fn snapshot(&self, revision: Revision) -> Snapshot {
        let mut names = HashMap::with_capacity(self.sets.len() + self.below.len());
        for name in self.sets.keys().chain(self.below.keys()) {
            if let Some((lower, entry)) = self.entry(name) {
                names.insert(lower, Arc::new(entry));
            }
        }
        Snapshot {
            zones: self.zone_entries(revision),
            names,
            revision,
        }
    }

    /// The snapshot after `touched`, sharing the untouched names' entries
    /// with `previous`.
    pub(crate) fn update(
        &self,
        previous: &Snapshot,
        touched: &Touched,
        revision: Revision,
    ) -> Snapshot {
        let mut names = previous.names.clone();
        for name in &touched.names {
            let Some(lower) = lower_name(name) else {
                continue;
            };
            match self.entry(name) {
                Some((_, entry)) => {
                    names.insert(lower, Arc::new(entry));
                }
                None => {
                    names.remove(&lower);
                }
            }
        }
        Snapshot {
            // The serial follows the revision, so the SOA is rebuilt on
            // every change (zones are few).
            zones: self.zone_entries(revision),
            names,
            revision,
        }
    }

    fn entry(&self, name: &str) -> Option<(LowerName, NameEntry)> {
        let lower = lower_name(name)?;
        let owner = Name::from(&lower);
        match self.sets.get(name) {
            Some(sets) => {
                let mut entry = NameEntry::default();
                for set in sets.values() {
                    let Some(set_entry) = set_entry(&owner, set) else {
                        continue;
                    };
                    let record_type = hickory_type(set.record_type);
                    match entry
                        .types
                        .iter_mut()
                        .find(|t| t.record_type == record_type)
                    {
                        Some(t) => t.sets.push(set_entry),
                        None => entry.types.push(TypeEntry {
                            record_type,
                            routing: set.routing,
                            sets: vec![set_entry],
                        }),
                    }
                }
                Some((lower, entry))
            }
            None if self.below.contains_key(name) => Some((lower, NameEntry::default())),
            None => None,
        }
    }

    fn zone_entries(&self, revision: Revision) -> Vec<ZoneEntry> {
        let mut zones: Vec<ZoneEntry> = Vec::new();
        for zone in self.zones.values() {
            let Some(apex) = lower_name(&zone.name) else {
                tracing::warn!(zone = %zone.id, name = %zone.name, "DNS zone name is not a domain name; ignored");
                continue;
            };
            // Zones of one name from several publishers (two accounts'
            // `ec2.internal`) answer as one.
            if zones.iter().any(|z| z.apex == apex) {
                continue;
            }
            let Some((soa, ns)) = apex_records(&apex, zone.negative_ttl, revision) else {
                continue;
            };
            zones.push(ZoneEntry { apex, soa, ns });
        }
        zones.sort_by_key(|z| std::cmp::Reverse(z.apex.num_labels()));
        zones
    }
}

fn lower_name(name: &str) -> Option<LowerName> {
    let name = dns_registry::normalize_name(name);
    Name::from_ascii(format!("{name}."))
        .ok()
        .map(|n| LowerName::new(&n))
}

fn hickory_type(t: RegistryType) -> RecordType {
    match t {
        RegistryType::A => RecordType::A,
        RegistryType::Aaaa => RecordType::AAAA,
        RegistryType::Srv => RecordType::SRV,
        RegistryType::Cname => RecordType::CNAME,
    }
}

/// A name value (SRV/CNAME target) as a fully-qualified name.
fn target_name(text: &str) -> Option<Name> {
    let text = text.trim().trim_end_matches('.');
    if text.is_empty() {
        return Some(Name::root());
    }
    Name::from_ascii(format!("{text}.")).ok()
}

fn rdata(t: RegistryType, value: &str) -> Option<RData> {
    Some(match t {
        RegistryType::A => RData::A(A(value.trim().parse::<Ipv4Addr>().ok()?)),
        RegistryType::Aaaa => RData::AAAA(AAAA(value.trim().parse::<Ipv6Addr>().ok()?)),
        RegistryType::Cname => RData::CNAME(CNAME(target_name(value)?)),
        RegistryType::Srv => {
            let mut parts = value.split_whitespace();
            let priority = parts.next()?.parse().ok()?;
            let weight = parts.next()?.parse().ok()?;
            let port = parts.next()?.parse().ok()?;
            let target = target_name(parts.next()?)?;
            if parts.next().is_some() {
                return None;
            }
            RData::SRV(SRV::new(priority, weight, port, target))
        }
    })
}

fn set_entry(owner: &Name, set: &RecordSet) -> Option<SetEntry> {
    let mut records = Vec::with_capacity(set.values.len());
    let mut targets = Vec::new();
    for value in &set.values {
        let Some(data) = rdata(set.record_type, value) else {
            tracing::warn!(name = %set.name, r#type = set.record_type.as_str(), value, "DNS record value is not valid; left out");
            continue;
        };
        match &data {
            RData::SRV(srv) => targets.push(LowerName::new(&srv.target)),
            RData::CNAME(cname) => targets.push(LowerName::new(&cname.0)),
            _ => {}
        }
        records.push(Record::from_rdata(owner.clone(), set.ttl, data));
    }
    if records.is_empty() {
        return None;
    }
    // CNAME is a singleton: one value per name.
    if set.record_type == RegistryType::Cname {
        records.truncate(1);
        targets.truncate(1);
    }
    Some(SetEntry {
        records,
        targets,
        weight: set.weight.unwrap_or(0),
        healthy: set.healthy,
    })
}

fn apex_records(
    apex: &LowerName,
    negative_ttl: u32,
    revision: Revision,
) -> Option<(Record, Record)> {
    let owner = Name::from(apex);
    let server = Name::from_ascii(NAME_SERVER).ok()?;
    let mailbox = Name::from_ascii(HOSTMASTER).ok()?;
    // A resolver caches a negative answer for min(SOA TTL, SOA minimum)
    // (RFC 2308), so both are the zone's negative TTL.
    let soa = SOA::new(
        server.clone(),
        mailbox,
        revision as u32,
        7200,
        900,
        1_209_600,
        negative_ttl,
    );
    Some((
        Record::from_rdata(owner.clone(), negative_ttl, RData::SOA(soa)),
        Record::from_rdata(owner, NS_TTL, RData::NS(NS(server))),
    ))
}

/// Keeps `index` current from `store` until the store shuts down: a full
/// read, then the watch from the revision read; after a watch error
/// (compaction, a lost connection) it reads again. `ready` is told once the
/// first snapshot is published.
pub(crate) async fn follow(
    store: Arc<dyn Store>,
    index: Arc<Index>,
    mut ready: Option<tokio::sync::oneshot::Sender<()>>,
) {
    loop {
        let revision = store.revision();
        let mut raw = Raw::load(store.as_ref());
        let mut current = Arc::new(raw.snapshot(revision));
        index.publish(current.clone());
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        let mut watch = match store.watch(dns_registry::PREFIX, revision).await {
            Ok(watch) => watch,
            Err(e) => {
                tracing::warn!(error = %e, "the DNS server cannot watch the store; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        'events: loop {
            let first = match watch.next().await {
                Some(Ok(event)) => event,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the DNS server's store watch ended; reading again");
                    break 'events;
                }
                None => return,
            };
            let mut touched = Touched::default();
            let mut last = first.kv.mod_revision;
            raw.apply(&first, &mut touched);
            // Everything already waiting goes into the same snapshot.
            let mut failed = false;
            while let Some(next) = watch.next().now_or_never() {
                match next {
                    Some(Ok(event)) => {
                        last = event.kv.mod_revision;
                        raw.apply(&event, &mut touched);
                    }
                    Some(Err(_)) | None => {
                        failed = true;
                        break;
                    }
                }
            }
            current = Arc::new(raw.update(&current, &touched, last));
            index.publish(current.clone());
            if failed {
                break 'events;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
