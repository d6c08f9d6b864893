//! Answering a question from a [`Snapshot`]: the records of the answer,
//! authority and additional sections, chosen by the sets' routing policy.
//!
//! Routing (Route 53's, as Cloud Map uses it):
//! * SIMPLE: every set's values.
//! * MULTIVALUE: up to 8 healthy sets, chosen at random, in random order.
//! * WEIGHTED: one healthy set, chosen at random in proportion to its
//!   weight (all weights 0: each equally likely).
//!
//! Unhealthy sets are left out while the name has a healthy set of that
//! type. When none is healthy, every set is answered as if healthy (Route
//! 53 "fails open" the same way: answering something beats answering
//! nothing when the health data may be what is wrong).

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{LowerName, Name, Record, RecordType};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::index::{SetEntry, Snapshot, TypeEntry, ZoneEntry};

/// The most sets a MULTIVALUE answer holds.
pub const MULTIVALUE_MAX: usize = 8;
/// The most CNAMEs followed within Berth's zones for one question.
const MAX_CHAIN: usize = 8;

/// An authoritative answer, borrowing its records from the snapshot.
#[derive(Debug, Default)]
pub struct Answer<'a> {
    pub rcode: ResponseCode,
    pub answers: Vec<&'a Record>,
    pub authorities: Vec<&'a Record>,
    pub additionals: Vec<&'a Record>,
    /// The chain ended at a CNAME whose target lies outside Berth's zones:
    /// the target, for the caller to resolve upstream.
    pub outside_target: Option<Name>,
}

impl Snapshot {
    /// Answers `qname`/`qtype` when `qname` lies in a Berth zone; `None`
    /// when it is not Berth's to answer.
    pub fn answer<'a>(
        &'a self,
        qname: &LowerName,
        qtype: RecordType,
        rng: &mut impl Rng,
    ) -> Option<Answer<'a>> {
        let mut zone = self.zone_of(qname)?;
        let mut answer = Answer::default();
        let mut chased: Option<LowerName> = None;
        for _ in 0..MAX_CHAIN {
            let name = chased.as_ref().unwrap_or(qname);
            let entry = self.names.get(name);
            let at_apex = *name == zone.apex;
            if at_apex {
                match qtype {
                    RecordType::SOA => answer.answers.push(&zone.soa),
                    RecordType::NS => answer.answers.push(&zone.ns),
                    RecordType::ANY => {
                        answer.answers.push(&zone.soa);
                        answer.answers.push(&zone.ns);
                    }
                    _ => {}
                }
            }
            let Some(entry) = entry else {
                if !at_apex {
                    // After CNAMEs too: the code is the last name's in the
                    // chain (RFC 6604).
                    answer.rcode = ResponseCode::NXDomain;
                }
                return Some(finish(answer, zone, qtype));
            };
            if qtype == RecordType::ANY {
                for t in &entry.types {
                    select(t, rng, &mut answer.answers);
                }
                return Some(finish(answer, zone, qtype));
            }
            if let Some(t) = entry.get(qtype) {
                let first = answer.answers.len();
                select(t, rng, &mut answer.answers);
                if qtype == RecordType::SRV {
                    self.srv_additionals(t, &answer.answers[first..], rng, &mut answer.additionals);
                }
                return Some(finish(answer, zone, qtype));
            }
            let cname = match entry.get(RecordType::CNAME) {
                Some(c) if qtype != RecordType::CNAME => c,
                _ => return Some(finish(answer, zone, qtype)),
            };
            let first = answer.answers.len();
            select(cname, rng, &mut answer.answers);
            let Some(target) = answer.answers[first..]
                .first()
                .and_then(|r| cname_target(r))
            else {
                return Some(finish(answer, zone, qtype));
            };
            let target_lower = LowerName::new(target);
            match self.zone_of(&target_lower) {
                Some(next) => {
                    zone = next;
                    chased = Some(target_lower);
                }
                None => {
                    answer.outside_target = Some(target.clone());
                    return Some(answer);
                }
            }
        }
        // A loop of CNAMEs: what was gathered, as resolvers expect.
        Some(answer)
    }

    /// A and AAAA records of the SRV targets that are Berth's names.
    fn srv_additionals<'a>(
        &'a self,
        srv: &'a TypeEntry,
        chosen: &[&'a Record],
        rng: &mut impl Rng,
        out: &mut Vec<&'a Record>,
    ) {
        let mut seen: Vec<&LowerName> = Vec::new();
        for set in &srv.sets {
            for (record, target) in set.records.iter().zip(&set.targets) {
                if !chosen.iter().any(|c| std::ptr::eq(*c, record)) || seen.contains(&target) {
                    continue;
                }
                seen.push(target);
                if let Some(entry) = self.names.get(target) {
                    for t in [RecordType::A, RecordType::AAAA] {
                        if let Some(t) = entry.get(t) {
                            select(t, rng, out);
                        }
                    }
                }
            }
        }
    }
}

fn cname_target(record: &Record) -> Option<&Name> {
    match &record.data {
        hickory_proto::rr::RData::CNAME(c) => Some(&c.0),
        _ => None,
    }
}

/// No data for the question: the zone's SOA in the authority section tells
/// resolvers how long to cache that.
fn finish<'a>(mut answer: Answer<'a>, zone: &'a ZoneEntry, qtype: RecordType) -> Answer<'a> {
    let has_data = answer
        .answers
        .iter()
        .any(|r| qtype == RecordType::ANY || r.record_type() == qtype);
    if !has_data {
        answer.authorities.push(&zone.soa);
    }
    answer
}

/// Appends the records `t`'s routing policy chooses.
pub(crate) fn select<'a>(t: &'a TypeEntry, rng: &mut impl Rng, out: &mut Vec<&'a Record>) {
    let any_healthy = t.sets.iter().any(|s| s.healthy);
    let eligible = |s: &&SetEntry| s.healthy || !any_healthy;
    match t.routing {
        berth_model::dns_registry::Routing::Simple => {
            for set in t.sets.iter().filter(eligible) {
                out.extend(set.records.iter());
            }
        }
        berth_model::dns_registry::Routing::Multivalue => {
            if t.sets.len() == 1 {
                out.extend(t.sets[0].records.iter());
                return;
            }
            let mut chosen: Vec<&SetEntry> = t.sets.iter().filter(eligible).collect();
            let (picked, _) = chosen.partial_shuffle(rng, MULTIVALUE_MAX);
            for set in picked.iter() {
                out.extend(set.records.iter());
            }
        }
        berth_model::dns_registry::Routing::Weighted => {
            let candidates = || t.sets.iter().filter(eligible);
            let total: u64 = candidates().map(|s| u64::from(s.weight)).sum();
            let pick = if total == 0 {
                let count = candidates().count();
                if count == 0 {
                    return;
                }
                candidates().nth(rng.gen_range(0..count))
            } else {
                let mut point = rng.gen_range(0..total);
                candidates().find(|s| {
                    let w = u64::from(s.weight);
                    if point < w {
                        true
                    } else {
                        point -= w;
                        false
                    }
                })
            };
            if let Some(set) = pick {
                out.extend(set.records.iter());
            }
        }
    }
}
