//! Capacity provider strategies: which provider each new task of a RunTask
//! or a service goes to, as ECS splits them.
//!
//! Each provider's `base` is filled first (only one item may have a base);
//! after that, every task goes to the provider whose share is furthest
//! behind its `weight`: the one with the smallest `(tasks beyond base + 1) /
//! weight`, ties going to the larger weight and then to strategy order. With
//! FARGATE base 1 weight 1 and FARGATE_SPOT weight 3, eight tasks split 2 and
//! 6, as ECS documents.

use std::collections::BTreeMap;

/// One item of a capacity provider strategy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StrategyItem {
    pub provider: String,
    pub base: u32,
    pub weight: u32,
}

/// A strategy ECS would refuse, with its message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StrategyError(pub String);

/// The most providers one strategy may name.
pub const MAX_STRATEGY_ITEMS: usize = 20;
pub const MAX_BASE: u32 = 100_000;
pub const MAX_WEIGHT: u32 = 1_000;

/// Checks a strategy the way ECS does before it places anything.
pub fn validate_strategy(strategy: &[StrategyItem]) -> Result<(), StrategyError> {
    let fail = |m: &str| Err(StrategyError(m.to_string()));
    if strategy.is_empty() {
        return fail("The capacity provider strategy must contain at least one capacity provider.");
    }
    if strategy.len() > MAX_STRATEGY_ITEMS {
        return Err(StrategyError(format!(
            "The capacity provider strategy can contain at most {MAX_STRATEGY_ITEMS} capacity providers."
        )));
    }
    for (i, item) in strategy.iter().enumerate() {
        if item.provider.is_empty() {
            return fail("The capacity provider name must not be empty.");
        }
        if strategy[..i].iter().any(|o| o.provider == item.provider) {
            return Err(StrategyError(format!(
                "The capacity provider strategy contains duplicate capacity provider '{}'.",
                item.provider
            )));
        }
        if item.base > MAX_BASE {
            return Err(StrategyError(format!(
                "The base value for capacity provider '{}' must be between 0 and {MAX_BASE}.",
                item.provider
            )));
        }
        if item.weight > MAX_WEIGHT {
            return Err(StrategyError(format!(
                "The weight value for capacity provider '{}' must be between 0 and {MAX_WEIGHT}.",
                item.provider
            )));
        }
    }
    if strategy.iter().filter(|i| i.base > 0).count() > 1 {
        return fail(
            "Only one capacity provider in a capacity provider strategy can have a base defined.",
        );
    }
    if strategy.iter().all(|i| i.weight == 0) {
        return fail(
            "At least one capacity provider in a capacity provider strategy must have a weight greater than zero.",
        );
    }
    Ok(())
}

/// The provider of each of `count` new tasks, in order, given how many tasks
/// each provider already runs for the same service (`running`; absent means
/// none). Validates the strategy first.
pub fn split_tasks(
    strategy: &[StrategyItem],
    running: &BTreeMap<String, u32>,
    count: u32,
) -> Result<Vec<String>, StrategyError> {
    validate_strategy(strategy)?;
    let mut counts: Vec<u64> = strategy
        .iter()
        .map(|i| u64::from(running.get(&i.provider).copied().unwrap_or(0)))
        .collect();
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let pick = match strategy
            .iter()
            .zip(&counts)
            .position(|(item, &n)| n < u64::from(item.base))
        {
            Some(i) => i,
            None => next_by_weight(strategy, &counts),
        };
        counts[pick] += 1;
        out.push(strategy[pick].provider.clone());
    }
    Ok(out)
}

/// The weighted provider furthest behind its share. Compares
/// `(beyond + 1) / weight` exactly by cross-multiplying.
fn next_by_weight(strategy: &[StrategyItem], counts: &[u64]) -> usize {
    let mut best: Option<(usize, u64, u64)> = None;
    for (i, (item, &n)) in strategy.iter().zip(counts).enumerate() {
        if item.weight == 0 {
            continue;
        }
        let beyond = n.saturating_sub(u64::from(item.base)) + 1;
        let weight = u64::from(item.weight);
        let better = match best {
            None => true,
            Some((_, b_beyond, b_weight)) => {
                let (lhs, rhs) = (beyond * b_weight, b_beyond * weight);
                lhs < rhs || (lhs == rhs && weight > b_weight)
            }
        };
        if better {
            best = Some((i, beyond, weight));
        }
    }
    // validate_strategy guarantees a weighted provider.
    best.map_or(0, |(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(provider: &str, base: u32, weight: u32) -> StrategyItem {
        StrategyItem {
            provider: provider.into(),
            base,
            weight,
        }
    }

    fn tally(providers: &[String]) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for p in providers {
            *out.entry(p.clone()).or_insert(0) += 1;
        }
        out
    }

    #[test]
    fn documented_fargate_and_spot_split() {
        let strategy = [item("FARGATE", 1, 1), item("FARGATE_SPOT", 0, 3)];
        let placed = split_tasks(&strategy, &BTreeMap::new(), 8).unwrap();
        assert_eq!(placed[0], "FARGATE", "the base comes first");
        let counts = tally(&placed);
        assert_eq!(counts["FARGATE"], 2);
        assert_eq!(counts["FARGATE_SPOT"], 6);
    }

    #[test]
    fn scaling_in_steps_ends_where_one_step_does() {
        let strategy = [item("A", 2, 1), item("B", 0, 4), item("C", 0, 2)];
        let at_once = tally(&split_tasks(&strategy, &BTreeMap::new(), 30).unwrap());
        let mut running = BTreeMap::new();
        for step in [3, 7, 11, 9] {
            for p in split_tasks(&strategy, &running, step).unwrap() {
                *running.entry(p).or_insert(0) += 1;
            }
        }
        assert_eq!(running, at_once);
        assert_eq!(at_once["A"], 2 + 4);
        assert_eq!(at_once["B"], 16);
        assert_eq!(at_once["C"], 8);
    }

    #[test]
    fn equal_weights_alternate_and_zero_weight_only_takes_its_base() {
        let placed = split_tasks(&[item("A", 0, 1), item("B", 0, 1)], &BTreeMap::new(), 4).unwrap();
        assert_eq!(
            tally(&placed),
            BTreeMap::from([("A".into(), 2), ("B".into(), 2)])
        );
        let placed =
            split_tasks(&[item("A", 3, 0), item("B", 0, 1)], &BTreeMap::new(), 10).unwrap();
        assert_eq!(
            tally(&placed),
            BTreeMap::from([("A".into(), 3), ("B".into(), 7)])
        );
    }

    #[test]
    fn invalid_strategies_are_refused() {
        for strategy in [
            vec![],
            vec![item("A", 1, 1), item("B", 1, 1)],
            vec![item("A", 0, 0)],
            vec![item("A", 0, 1), item("A", 0, 1)],
            vec![item("A", MAX_BASE + 1, 1)],
            vec![item("A", 0, MAX_WEIGHT + 1)],
        ] {
            assert!(
                split_tasks(&strategy, &BTreeMap::new(), 1).is_err(),
                "{strategy:?}"
            );
        }
    }
}
