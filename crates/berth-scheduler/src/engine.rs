//! The indexed placement engine behind [`crate::place_with`].
//!
//! Tasks are grouped into classes (same task group and required attributes:
//! the same instances are eligible for them and the same spread counts
//! apply). Each class gets an index over the instances that can ever take one
//! of its tasks in this batch:
//!
//! - Leading `spread` strategies over an attribute or `host` with few values
//!   (at most [`GROUP_MAX`]) become a tree of buckets, one per value; a
//!   bucket's count is read live from the per-value task counts, so placing a
//!   task changes one counter, not the key of every instance in the zone.
//! - The remaining strategies form a key per instance (`binpack`: remaining
//!   CPU or memory; `spread instanceId`: the group's tasks on the instance;
//!   `spread` over a many-valued field: the value's count; `random` after
//!   another strategy: a random tie-break), kept in an ordered set per bucket
//!   and updated for the instances a placement touches.
//! - `random` right after the buckets (or alone) keeps the bucket's
//!   instances in a vector and samples it, which is exactly uniform among the
//!   candidates.
//!
//! A query walks the buckets with the lowest count, takes the first feasible
//! instance of each bucket's ordered set (starting at the task's size when
//! the first key is `binpack`), and compares them by key and snapshot
//! order: the same order as the scan in [`crate::reference`]. Instances that
//! can no longer take any task of the class (too little left for the
//! smallest, a port every task needs, `distinctInstance`) leave the index.
//! `memberOf` is evaluated once per instance, except where it depends on
//! tasks the batch may add (`task:group`, `runningTasksCount`); those
//! instances are re-checked when they come up.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasherDefault;

use crate::expr::{Expression, Tri};
use crate::policy::{default_strategies, BinpackField, Constraint, Policy, Strategy};
use crate::reference;
use crate::rng::Rng;
use crate::{
    missing_attribute, rejection, reserve, resource_rejection, InstanceSnapshot, InstanceStatus,
    Placement, Rejection, TaskRequest, MAX_STRATEGIES,
};

/// Deterministic hashing: no process-random seed.
pub(crate) type Map<K, V> = HashMap<K, V, BuildHasherDefault<DefaultHasher>>;

/// Spread fields with at most this many values among the candidates are
/// kept as buckets.
const GROUP_MAX: usize = 64;
/// Batches with more classes than this are placed by the scan.
const MAX_CLASSES: usize = 8;
/// Draws from a random bucket before falling back to a scan of it.
const RANDOM_TRIES: usize = 8;

type Key = [i64; MAX_STRATEGIES];

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SpreadField {
    Instance,
    Host,
    Attribute(String),
}

impl SpreadField {
    fn parse(field: &str) -> SpreadField {
        if field.eq_ignore_ascii_case("instanceId") {
            SpreadField::Instance
        } else if field.eq_ignore_ascii_case("host") {
            SpreadField::Host
        } else {
            match field.get(..10) {
                Some(prefix) if prefix.eq_ignore_ascii_case("attribute:") => {
                    SpreadField::Attribute(field[10..].to_string())
                }
                _ => SpreadField::Attribute(field.to_string()),
            }
        }
    }

    /// The instance's value of a `host` or attribute field; `None` when it
    /// has no such attribute (all such instances share that value).
    pub(crate) fn value<'a>(&self, instance: &'a InstanceSnapshot) -> Option<&'a str> {
        match self {
            SpreadField::Instance => None,
            SpreadField::Host => Some(instance.ec2_instance_id.as_str()),
            SpreadField::Attribute(name) => instance
                .attributes
                .get(name)
                .map(|v| v.as_deref().unwrap_or("")),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Level {
    Binpack(BinpackField),
    Spread(SpreadField),
    Random,
}

/// A policy ready to apply: the strategies that matter, in order.
pub(crate) struct Compiled<'p> {
    pub(crate) levels: Vec<Level>,
    pub(crate) constraints: Vec<&'p Constraint>,
    distinct: bool,
    member_of: Vec<&'p Expression>,
}

impl<'p> Compiled<'p> {
    pub(crate) fn new(policy: &'p Policy) -> Compiled<'p> {
        let defaults;
        let strategies = if policy.strategies.is_empty() {
            defaults = default_strategies();
            &defaults
        } else {
            &policy.strategies
        };
        let mut levels = Vec::new();
        for strategy in strategies.iter().take(MAX_STRATEGIES) {
            let level = match strategy {
                Strategy::Binpack(f) => Level::Binpack(*f),
                Strategy::Spread(field) => Level::Spread(SpreadField::parse(field)),
                Strategy::Random => Level::Random,
            };
            let last = matches!(level, Level::Random);
            levels.push(level);
            if last {
                break;
            }
        }
        Compiled {
            levels,
            constraints: policy.constraints.iter().collect(),
            distinct: policy
                .constraints
                .iter()
                .any(|c| matches!(c, Constraint::DistinctInstance)),
            member_of: policy
                .constraints
                .iter()
                .filter_map(|c| match c {
                    Constraint::MemberOf(e) => Some(e),
                    Constraint::DistinctInstance => None,
                })
                .collect(),
        }
    }
}

/// The first constraint `instance` fails for `task`, as it is now.
fn constraint_rejection(
    instance: &InstanceSnapshot,
    task: &TaskRequest,
    compiled: &Compiled<'_>,
) -> Option<Rejection> {
    compiled.constraints.iter().find_map(|c| match c {
        Constraint::DistinctInstance => (instance.groups.get(&task.group).copied().unwrap_or(0)
            > 0)
        .then_some(Rejection::DistinctInstance),
        Constraint::MemberOf(e) => (!e.matches(instance)).then_some(Rejection::MemberOf),
    })
}

/// Everything that keeps `task` off `instance`, first reason first.
pub(crate) fn full_rejection(
    instance: &InstanceSnapshot,
    task: &TaskRequest,
    compiled: &Compiled<'_>,
) -> Option<Rejection> {
    rejection(instance, task).or_else(|| constraint_rejection(instance, task, compiled))
}

/// What every task of a class needs at least: an instance below this can
/// take none of them.
struct Smallest {
    cpu: i64,
    memory: i64,
    tcp: Vec<u16>,
    udp: Vec<u16>,
    custom: Vec<(String, i64)>,
}

impl Smallest {
    /// The smallest demand among `first` and `tasks` (a class's tasks).
    fn of<'t>(first: &TaskRequest, tasks: impl Iterator<Item = &'t TaskRequest>) -> Smallest {
        let mut s = Smallest {
            cpu: first.cpu,
            memory: first.memory,
            tcp: first.host_ports_tcp.clone(),
            udp: first.host_ports_udp.clone(),
            custom: first
                .custom
                .iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        };
        for t in tasks {
            s.cpu = s.cpu.min(t.cpu);
            s.memory = s.memory.min(t.memory);
            s.tcp.retain(|p| t.host_ports_tcp.contains(p));
            s.udp.retain(|p| t.host_ports_udp.contains(p));
            s.custom
                .retain_mut(|(name, need)| match t.custom.get(name) {
                    Some(v) if *v > 0 => {
                        *need = (*need).min(*v);
                        true
                    }
                    _ => false,
                });
        }
        s
    }

    fn fits(&self, instance: &InstanceSnapshot) -> bool {
        instance.cpu_remaining >= self.cpu
            && instance.memory_remaining >= self.memory
            && !self.tcp.iter().any(|p| instance.ports_tcp_used.contains(p))
            && !self.udp.iter().any(|p| instance.ports_udp_used.contains(p))
            && self.custom.iter().all(|(name, need)| {
                instance.custom_remaining.get(name).copied().unwrap_or(0) >= *need
            })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A bucket level of the tree.
    Group,
    Binpack(BinpackField),
    SpreadInstance,
    /// `spread` over a field with many values: a key component.
    SpreadValue,
    /// `random` after another key component: a random tie-break.
    RandomKey,
    /// `random` first among the key components: sampled buckets.
    RandomLeaf,
}

/// Value ids and per-value task counts of one `host`/attribute spread.
struct Values {
    of: Vec<u32>,
    counts: Vec<i64>,
    /// For key components: the index's instances with each value, to re-key
    /// when the count changes.
    members: Vec<Vec<u32>>,
}

#[derive(Clone, Copy)]
enum Child {
    Node(u32),
    Leaf(u32),
}

struct GroupNode {
    level: usize,
    children: Vec<(u32, Child)>,
}

enum Leaf {
    Ordered(BTreeSet<(Key, u32)>),
    Random(Vec<u32>),
}

#[derive(Clone, Copy)]
struct Cand {
    key: Key,
    idx: u32,
    /// For sampled buckets: how many candidates the pick stands for, to
    /// choose between tied buckets in proportion; 0 for ordered ones.
    weight: u64,
}

/// What a feasibility check needs besides the index.
struct Ctx<'a, 'p> {
    instances: &'a [InstanceSnapshot],
    compiled: &'a Compiled<'p>,
    task: &'a TaskRequest,
}

/// The index of one class.
struct Index<'t> {
    group: &'t str,
    smallest: Smallest,
    kinds: Vec<Kind>,
    leaf_start: usize,
    /// In the index (the instance may still take a task of the class).
    live: Vec<bool>,
    /// `memberOf` must be evaluated when the instance comes up.
    recheck: Vec<bool>,
    /// Each `memberOf` expression's settled value per instance, for failure
    /// reasons.
    settled: Vec<Vec<Tri>>,
    /// Tasks of `group` on each instance.
    own: Vec<u32>,
    values: Vec<Option<Values>>,
    nodes: Vec<GroupNode>,
    leaves: Vec<Leaf>,
    leaf_of: Vec<u32>,
    key_of: Vec<Key>,
    /// Position of an instance in its random leaf.
    slot: Vec<u32>,
    root: Child,
    scratch: Vec<u32>,
}

impl<'t> Index<'t> {
    fn build(
        instances: &[InstanceSnapshot],
        compiled: &Compiled<'_>,
        class_tasks: &[&'t TaskRequest],
        batch_groups: &BTreeSet<&str>,
        rng: &mut Rng,
    ) -> Index<'t> {
        let first = class_tasks[0];
        let group = first.group.as_str();
        let smallest = Smallest::of(first, class_tasks.iter().copied());
        let n = instances.len();
        let own: Vec<u32> = instances
            .iter()
            .map(|inst| inst.groups.get(group).copied().unwrap_or(0))
            .collect();
        let settled: Vec<Vec<Tri>> = compiled
            .member_of
            .iter()
            .map(|e| {
                instances
                    .iter()
                    .map(|inst| e.settled(inst, batch_groups))
                    .collect()
            })
            .collect();
        let mut recheck = vec![false; n];
        let mut eligible = Vec::new();
        for (i, inst) in instances.iter().enumerate() {
            if inst.status != InstanceStatus::Active
                || !inst.agent_connected
                || missing_attribute(inst, first).is_some()
                || (compiled.distinct && own[i] > 0)
                || !smallest.fits(inst)
                || settled.iter().any(|s| s[i] == Tri::False)
            {
                continue;
            }
            recheck[i] = settled.iter().any(|s| s[i] == Tri::Unknown);
            eligible.push(i as u32);
        }

        let levels = &compiled.levels;
        let mut values: Vec<Option<Values>> = levels
            .iter()
            .map(|level| match level {
                Level::Spread(field @ (SpreadField::Host | SpreadField::Attribute(_))) => {
                    let mut ids: Map<Option<&str>, u32> = Map::default();
                    let mut of = Vec::with_capacity(n);
                    let mut counts = Vec::new();
                    for (i, inst) in instances.iter().enumerate() {
                        let next = ids.len() as u32;
                        let id = *ids.entry(field.value(inst)).or_insert(next);
                        if id == next {
                            counts.push(0);
                        }
                        counts[id as usize] += i64::from(own[i]);
                        of.push(id);
                    }
                    Some(Values {
                        of,
                        counts,
                        members: Vec::new(),
                    })
                }
                _ => None,
            })
            .collect();

        let mut kinds = Vec::with_capacity(levels.len());
        let mut leaf_start = 0;
        for (p, level) in levels.iter().enumerate() {
            let few_values = || {
                let Some(v) = values[p].as_ref() else {
                    return false;
                };
                let of = &v.of;
                let distinct: BTreeSet<u32> = eligible.iter().map(|&i| of[i as usize]).collect();
                distinct.len() <= GROUP_MAX
            };
            let kind = match level {
                Level::Spread(SpreadField::Host | SpreadField::Attribute(_))
                    if leaf_start == p && few_values() =>
                {
                    leaf_start = p + 1;
                    Kind::Group
                }
                Level::Spread(SpreadField::Instance) => Kind::SpreadInstance,
                Level::Spread(_) => Kind::SpreadValue,
                Level::Binpack(f) => Kind::Binpack(*f),
                Level::Random if p == leaf_start => Kind::RandomLeaf,
                Level::Random => Kind::RandomKey,
            };
            kinds.push(kind);
        }
        for (p, kind) in kinds.iter().enumerate() {
            if *kind != Kind::SpreadValue {
                continue;
            }
            if let Some(v) = values[p].as_mut() {
                v.members = vec![Vec::new(); v.counts.len()];
                for &i in &eligible {
                    v.members[v.of[i as usize] as usize].push(i);
                }
            }
        }

        let mut index = Index {
            group,
            smallest,
            kinds,
            leaf_start,
            live: vec![false; n],
            recheck,
            settled,
            own,
            values,
            nodes: Vec::new(),
            leaves: Vec::new(),
            leaf_of: vec![0; n],
            key_of: vec![[0; MAX_STRATEGIES]; n],
            slot: vec![0; n],
            root: Child::Leaf(0),
            scratch: Vec::new(),
        };
        for &i in &eligible {
            index.live[i as usize] = true;
        }
        index.root = index.build_child(0, eligible, instances, rng);
        index
    }

    fn build_child(
        &mut self,
        p: usize,
        members: Vec<u32>,
        instances: &[InstanceSnapshot],
        rng: &mut Rng,
    ) -> Child {
        let grouped = p < self.leaf_start && self.values[p].is_some();
        if grouped {
            let of = match self.values[p].as_ref() {
                Some(v) => &v.of,
                None => &Vec::new(),
            };
            let mut parts: Vec<(u32, Vec<u32>)> = Vec::new();
            let mut part_of: Map<u32, usize> = Map::default();
            for i in members {
                let v = of[i as usize];
                let k = *part_of.entry(v).or_insert_with(|| {
                    parts.push((v, Vec::new()));
                    parts.len() - 1
                });
                parts[k].1.push(i);
            }
            let children = parts
                .into_iter()
                .map(|(v, part)| (v, self.build_child(p + 1, part, instances, rng)))
                .collect();
            self.nodes.push(GroupNode { level: p, children });
            Child::Node(self.nodes.len() as u32 - 1)
        } else {
            let id = self.leaves.len() as u32;
            for &i in &members {
                self.leaf_of[i as usize] = id;
            }
            let leaf = if self.kinds.get(p) == Some(&Kind::RandomLeaf) {
                for (k, &i) in members.iter().enumerate() {
                    self.slot[i as usize] = k as u32;
                }
                Leaf::Random(members)
            } else {
                let mut set = BTreeSet::new();
                for i in members {
                    let key = self.key(i as usize, instances, rng);
                    self.key_of[i as usize] = key;
                    set.insert((key, i));
                }
                Leaf::Ordered(set)
            };
            self.leaves.push(leaf);
            Child::Leaf(id)
        }
    }

    /// The key components of instance `i` (bucket levels stay 0).
    fn key(&self, i: usize, instances: &[InstanceSnapshot], rng: &mut Rng) -> Key {
        let mut key = [0; MAX_STRATEGIES];
        for (p, (slot, kind)) in key.iter_mut().zip(&self.kinds).enumerate() {
            if p < self.leaf_start {
                continue;
            }
            *slot = match *kind {
                Kind::Binpack(BinpackField::Memory) => instances[i].memory_remaining,
                Kind::Binpack(BinpackField::Cpu) => instances[i].cpu_remaining,
                Kind::SpreadInstance => i64::from(self.own[i]),
                Kind::SpreadValue => self.values[p]
                    .as_ref()
                    .map_or(0, |v| v.counts[v.of[i] as usize]),
                Kind::RandomKey => (rng.next_u64() >> 1) as i64,
                Kind::Group | Kind::RandomLeaf => 0,
            };
        }
        key
    }

    /// Whether instance `i` can take no further task of the class.
    fn dead(&self, i: usize, ctx: &Ctx<'_, '_>) -> bool {
        !self.smallest.fits(&ctx.instances[i]) || (ctx.compiled.distinct && self.own[i] > 0)
    }

    fn feasible(&self, i: usize, ctx: &Ctx<'_, '_>) -> bool {
        let inst = &ctx.instances[i];
        resource_rejection(inst, ctx.task).is_none()
            && !(ctx.compiled.distinct && self.own[i] > 0)
            && (!self.recheck[i] || ctx.compiled.member_of.iter().all(|e| e.matches(inst)))
    }

    fn remove(&mut self, i: usize) {
        self.live[i] = false;
        match &mut self.leaves[self.leaf_of[i] as usize] {
            Leaf::Ordered(set) => {
                set.remove(&(self.key_of[i], i as u32));
            }
            Leaf::Random(items) => {
                let at = self.slot[i] as usize;
                items.swap_remove(at);
                if let Some(&moved) = items.get(at) {
                    self.slot[moved as usize] = at as u32;
                }
            }
        }
    }

    fn rekey(&mut self, i: usize, instances: &[InstanceSnapshot], rng: &mut Rng) {
        if let Leaf::Ordered(_) = self.leaves[self.leaf_of[i] as usize] {
            let key = self.key(i, instances, rng);
            let old = self.key_of[i];
            if let Leaf::Ordered(set) = &mut self.leaves[self.leaf_of[i] as usize] {
                set.remove(&(old, i as u32));
                set.insert((key, i as u32));
            }
            self.key_of[i] = key;
        }
    }

    fn query(&mut self, child: Child, ctx: &Ctx<'_, '_>, rng: &mut Rng) -> Option<Cand> {
        match child {
            Child::Node(id) => self.query_node(id as usize, ctx, rng),
            Child::Leaf(id) => match self.leaves[id as usize] {
                Leaf::Ordered(_) => self.query_ordered(id as usize, ctx),
                Leaf::Random(_) => self.query_random(id as usize, ctx, rng),
            },
        }
    }

    /// The best candidate among the buckets with the fewest tasks that have
    /// one; ties between buckets go by key, then snapshot order (or, for
    /// sampled buckets, at random in proportion to their size).
    fn query_node(&mut self, id: usize, ctx: &Ctx<'_, '_>, rng: &mut Rng) -> Option<Cand> {
        let level = self.nodes[id].level;
        let buckets = self.nodes[id].children.len();
        let count = |index: &Index<'_>, b: usize| {
            let v = index.nodes[id].children[b].0 as usize;
            index.values[level]
                .as_ref()
                .map_or(0, |values| values.counts[v])
        };
        let mut tried = vec![false; buckets];
        loop {
            let lowest = (0..buckets)
                .filter(|&b| !tried[b])
                .map(|b| count(self, b))
                .min()?;
            let mut best: Option<Cand> = None;
            let mut total = 0;
            for (b, done) in tried.iter_mut().enumerate() {
                if *done || count(self, b) != lowest {
                    continue;
                }
                *done = true;
                let child = self.nodes[id].children[b].1;
                if let Some(mut c) = self.query(child, ctx, rng) {
                    c.key[level] = lowest;
                    best = Some(match best {
                        None => {
                            total = c.weight;
                            c
                        }
                        Some(b) => better(b, c, &mut total, rng),
                    });
                }
            }
            if best.is_some() {
                return best;
            }
        }
    }

    fn query_ordered(&mut self, id: usize, ctx: &Ctx<'_, '_>) -> Option<Cand> {
        let mut start = [0; MAX_STRATEGIES];
        for k in start.iter_mut().skip(self.leaf_start) {
            *k = i64::MIN;
        }
        if let Some(Kind::Binpack(f)) = self.kinds.get(self.leaf_start) {
            start[self.leaf_start] = match f {
                BinpackField::Memory => ctx.task.memory,
                BinpackField::Cpu => ctx.task.cpu,
            };
        }
        let mut dead = std::mem::take(&mut self.scratch);
        dead.clear();
        let mut found = None;
        let Leaf::Ordered(set) = &self.leaves[id] else {
            unreachable!("an ordered leaf")
        };
        for &(key, i) in set.range((start, 0)..) {
            if self.feasible(i as usize, ctx) {
                found = Some(Cand {
                    key,
                    idx: i,
                    weight: 0,
                });
                break;
            }
            if self.dead(i as usize, ctx) {
                dead.push(i);
            }
        }
        for &i in &dead {
            self.remove(i as usize);
        }
        self.scratch = dead;
        found
    }

    /// Uniform among the bucket's feasible instances: a few draws, then a
    /// scan of the bucket.
    fn query_random(&mut self, id: usize, ctx: &Ctx<'_, '_>, rng: &mut Rng) -> Option<Cand> {
        let len = |index: &Index<'_>| match &index.leaves[id] {
            Leaf::Random(items) => items.len(),
            Leaf::Ordered(_) => unreachable!("a random leaf"),
        };
        let item = |index: &Index<'_>, k: usize| match &index.leaves[id] {
            Leaf::Random(items) => items[k] as usize,
            Leaf::Ordered(_) => unreachable!("a random leaf"),
        };
        for _ in 0..RANDOM_TRIES {
            let n = len(self);
            if n == 0 {
                return None;
            }
            let i = item(self, rng.below(n as u64) as usize);
            if self.feasible(i, ctx) {
                return Some(Cand {
                    key: [0; MAX_STRATEGIES],
                    idx: i as u32,
                    weight: n as u64,
                });
            }
            if self.dead(i, ctx) {
                self.remove(i);
            }
        }
        let mut feasible = std::mem::take(&mut self.scratch);
        feasible.clear();
        let mut k = 0;
        while k < len(self) {
            let i = item(self, k);
            if self.feasible(i, ctx) {
                feasible.push(i as u32);
                k += 1;
            } else if self.dead(i, ctx) {
                self.remove(i);
            } else {
                k += 1;
            }
        }
        let found = (!feasible.is_empty()).then(|| Cand {
            key: [0; MAX_STRATEGIES],
            idx: feasible[rng.below(feasible.len() as u64) as usize],
            weight: feasible.len() as u64,
        });
        self.scratch = feasible;
        found
    }

    /// Every instance's first reason against `task` (as
    /// [`full_rejection`], with `memberOf` answered from what was settled at
    /// the start), or `Err` with an instance that has none.
    fn reasons(&self, ctx: &Ctx<'_, '_>) -> Result<Vec<(usize, Rejection)>, usize> {
        let mut reasons = Vec::with_capacity(ctx.instances.len());
        for (i, inst) in ctx.instances.iter().enumerate() {
            let constraint = || {
                let mut member_of = 0;
                ctx.compiled.constraints.iter().find_map(|c| match c {
                    Constraint::DistinctInstance => (ctx.compiled.distinct && self.own[i] > 0)
                        .then_some(Rejection::DistinctInstance),
                    Constraint::MemberOf(e) => {
                        let k = member_of;
                        member_of += 1;
                        let holds = match self.settled[k][i] {
                            Tri::True => true,
                            Tri::False => false,
                            Tri::Unknown => e.matches(inst),
                        };
                        (!holds).then_some(Rejection::MemberOf)
                    }
                })
            };
            match rejection(inst, ctx.task).or_else(constraint) {
                Some(r) => reasons.push((i, r)),
                None => return Err(i),
            }
        }
        Ok(reasons)
    }

    /// Instance `i` took `task` (already reserved in `instances`).
    fn placed(&mut self, i: usize, task: &TaskRequest, ctx: &Ctx<'_, '_>, rng: &mut Rng) {
        if task.group == self.group {
            self.own[i] += 1;
            for p in 0..self.kinds.len() {
                let Some(v) = self.values[p].as_mut() else {
                    continue;
                };
                let value = v.of[i] as usize;
                v.counts[value] += 1;
                if self.kinds[p] == Kind::SpreadValue {
                    let members = std::mem::take(&mut v.members[value]);
                    for &j in &members {
                        let j = j as usize;
                        if j != i && self.live[j] {
                            self.rekey(j, ctx.instances, rng);
                        }
                    }
                    if let Some(v) = self.values[p].as_mut() {
                        v.members[value] = members;
                    }
                }
            }
        }
        if self.live[i] {
            if self.dead(i, ctx) {
                self.remove(i);
            } else {
                self.rekey(i, ctx.instances, rng);
            }
        }
    }
}

type Reasons = Vec<(usize, Rejection)>;

/// Failure reasons within one batch: the first failure of a request lists
/// every instance; a later failure of an identical request lists only the
/// instances whose reason changed since its last failure (or the first
/// instance, if none did).
#[derive(Default)]
pub(crate) struct Failures<'t> {
    /// Placements so far: while it has not moved, nothing changed.
    epoch: u64,
    last: Map<&'t TaskRequest, (u64, Reasons)>,
}

impl<'t> Failures<'t> {
    pub(crate) fn placed(&mut self) {
        self.epoch += 1;
    }

    fn forget(&mut self, task: &'t TaskRequest) {
        self.last.remove(task);
    }

    /// What to report for `task`'s failure; `all` computes every instance's
    /// reason.
    pub(crate) fn report(
        &mut self,
        task: &'t TaskRequest,
        all: impl FnOnce() -> Vec<(usize, Rejection)>,
    ) -> Vec<(usize, Rejection)> {
        let epoch = self.epoch;
        match self.last.get_mut(task) {
            None => {
                let reasons = all();
                self.last.insert(task, (epoch, reasons.clone()));
                reasons
            }
            Some((seen, previous)) => {
                let first = || previous.first().cloned().into_iter().collect();
                if *seen == epoch {
                    return first();
                }
                let reasons = all();
                let changed: Vec<_> = reasons
                    .iter()
                    .zip(previous.iter())
                    .filter(|(now, before)| now != before)
                    .map(|(now, _)| now.clone())
                    .collect();
                let out = if changed.is_empty() { first() } else { changed };
                *seen = epoch;
                *previous = reasons;
                out
            }
        }
    }
}

/// The better of two candidates from tied buckets.
fn better(best: Cand, c: Cand, total: &mut u64, rng: &mut Rng) -> Cand {
    match c.key.cmp(&best.key) {
        std::cmp::Ordering::Less => {
            *total = c.weight;
            c
        }
        std::cmp::Ordering::Greater => best,
        std::cmp::Ordering::Equal if c.weight > 0 => {
            *total += c.weight;
            if rng.below(*total) < c.weight {
                c
            } else {
                best
            }
        }
        std::cmp::Ordering::Equal => {
            if c.idx < best.idx {
                c
            } else {
                best
            }
        }
    }
}

pub(crate) fn place(
    instances: &mut [InstanceSnapshot],
    tasks: &[TaskRequest],
    policy: &Policy,
    seed: u64,
) -> Vec<Placement> {
    let compiled = Compiled::new(policy);
    let mut rng = Rng::new(seed);

    type ClassKey<'t> = (&'t str, &'t [(String, Option<String>)]);
    let mut class_ids: Map<ClassKey<'_>, usize> = Map::default();
    let mut classes: Vec<Vec<&TaskRequest>> = Vec::new();
    let mut class_of = Vec::with_capacity(tasks.len());
    for task in tasks {
        let key = (task.group.as_str(), task.required_attributes.as_slice());
        let next = classes.len();
        let id = *class_ids.entry(key).or_insert(next);
        if id == next {
            classes.push(Vec::new());
        }
        classes[id].push(task);
        class_of.push(id);
    }
    if classes.len() > MAX_CLASSES {
        return reference::place_compiled(instances, tasks, &compiled, &mut rng);
    }
    let batch_groups: BTreeSet<&str> = tasks.iter().map(|t| t.group.as_str()).collect();
    let mut indexes: Vec<Index<'_>> = classes
        .iter()
        .map(|class| Index::build(instances, &compiled, class, &batch_groups, &mut rng))
        .collect();

    let mut plan = Vec::with_capacity(tasks.len());
    let mut failures = Failures::default();
    for (t, task) in tasks.iter().enumerate() {
        let ctx = Ctx {
            instances,
            compiled: &compiled,
            task,
        };
        let index = &mut indexes[class_of[t]];
        let root = index.root;
        let chosen = match index.query(root, &ctx, &mut rng) {
            Some(c) => Some(c.idx as usize),
            None => {
                let mut missed = None;
                let reasons = failures.report(task, || match index.reasons(&ctx) {
                    Ok(reasons) => reasons,
                    Err(i) => {
                        missed = Some(i);
                        Vec::new()
                    }
                });
                match missed {
                    None => {
                        plan.push(Placement::Unplaced(reasons));
                        None
                    }
                    Some(i) => {
                        // Cannot happen; if it did, the scan decides.
                        debug_assert!(false, "the index missed instance {i} for task {t}");
                        failures.forget(task);
                        match reference::choose(instances, task, &compiled, &mut rng) {
                            Ok(i) => Some(i),
                            Err(reasons) => {
                                let reasons = failures.report(task, || reasons);
                                plan.push(Placement::Unplaced(reasons));
                                None
                            }
                        }
                    }
                }
            }
        };
        if let Some(i) = chosen {
            reserve(&mut instances[i], task);
            failures.placed();
            let ctx = Ctx {
                instances,
                compiled: &compiled,
                task,
            };
            for index in &mut indexes {
                index.placed(i, task, &ctx, &mut rng);
            }
            plan.push(Placement::Placed(i));
        }
    }
    plan
}
