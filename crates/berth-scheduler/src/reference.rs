//! The plain scan: every task looks at every instance. It is the definition
//! [`crate::place_with`] is tested against (the same plan for every policy
//! without `random`), and what it falls back to for batches with many
//! different task groups. `O(instances)` per task: fine for a few tasks,
//! too slow for large batches on large clusters.

use std::collections::HashMap;

use crate::engine::{full_rejection, Compiled, Failures, Level, SpreadField};
use crate::policy::{BinpackField, Policy};
use crate::rng::Rng;
use crate::{reserve, InstanceSnapshot, Placement, Rejection, TaskRequest};

/// Same contract as [`crate::place_with`], by scanning.
pub fn place_with(
    instances: &mut [InstanceSnapshot],
    tasks: &[TaskRequest],
    policy: &Policy,
    seed: u64,
) -> Vec<Placement> {
    let compiled = Compiled::new(policy);
    let mut rng = Rng::new(seed);
    place_compiled(instances, tasks, &compiled, &mut rng)
}

pub(crate) fn place_compiled(
    instances: &mut [InstanceSnapshot],
    tasks: &[TaskRequest],
    compiled: &Compiled<'_>,
    rng: &mut Rng,
) -> Vec<Placement> {
    let mut failures = Failures::default();
    tasks
        .iter()
        .map(|task| match choose(instances, task, compiled, rng) {
            Ok(i) => {
                reserve(&mut instances[i], task);
                failures.placed();
                Placement::Placed(i)
            }
            Err(reasons) => Placement::Unplaced(failures.report(task, || reasons)),
        })
        .collect()
}

/// The instance `task` goes to, or every instance's reason.
pub(crate) fn choose(
    instances: &[InstanceSnapshot],
    task: &TaskRequest,
    compiled: &Compiled<'_>,
    rng: &mut Rng,
) -> Result<usize, Vec<(usize, Rejection)>> {
    let mut candidates = Vec::new();
    let mut reasons = Vec::new();
    for (i, instance) in instances.iter().enumerate() {
        match full_rejection(instance, task, compiled) {
            Some(r) => reasons.push((i, r)),
            None => candidates.push(i),
        }
    }
    if candidates.is_empty() {
        return Err(reasons);
    }
    let own = |i: usize| i64::from(instances[i].groups.get(&task.group).copied().unwrap_or(0));
    for level in &compiled.levels {
        let keys: Vec<i64> = match level {
            Level::Random => {
                let pick = rng.below(candidates.len() as u64) as usize;
                return Ok(candidates[pick]);
            }
            Level::Binpack(BinpackField::Cpu) => candidates
                .iter()
                .map(|&i| instances[i].cpu_remaining)
                .collect(),
            Level::Binpack(BinpackField::Memory) => candidates
                .iter()
                .map(|&i| instances[i].memory_remaining)
                .collect(),
            Level::Spread(SpreadField::Instance) => candidates.iter().map(|&i| own(i)).collect(),
            Level::Spread(field) => {
                let mut per_value: HashMap<Option<&str>, i64> = HashMap::new();
                for (i, instance) in instances.iter().enumerate() {
                    *per_value.entry(field.value(instance)).or_default() += own(i);
                }
                candidates
                    .iter()
                    .map(|&i| per_value[&field.value(&instances[i])])
                    .collect()
            }
        };
        let best = keys
            .iter()
            .copied()
            .min()
            .expect("candidates are not empty");
        candidates = candidates
            .iter()
            .zip(&keys)
            .filter(|(_, k)| **k == best)
            .map(|(i, _)| *i)
            .collect();
    }
    Ok(candidates[0])
}
