//! Tag rules every creating and tagging operation shares.

use berth_model::shapes::ecs::Tag;
use berth_model::tags::{self as rules, TagRef};
use berth_model::AwsError;

use crate::error;

/// Checks tags a request adds, given the keys the resource already has.
pub(crate) fn check_new<'a>(
    tags: &'a [Tag],
    existing: impl Iterator<Item = &'a str>,
) -> Result<(), AwsError> {
    let mut refs = Vec::with_capacity(tags.len());
    for tag in tags {
        let key = tag
            .key
            .as_deref()
            .ok_or_else(|| error::missing("tags.key"))?;
        refs.push(TagRef {
            key,
            value: tag.value.as_deref().unwrap_or(""),
        });
    }
    rules::check_user_tags(refs, existing).map_err(error::invalid_parameter)
}

/// Merges `new` into `current`: same key replaces the value.
pub(crate) fn merge(current: &mut Vec<Tag>, new: &[Tag]) {
    for tag in new {
        match current.iter_mut().find(|t| t.key == tag.key) {
            Some(existing) => existing.value = tag.value.clone(),
            None => current.push(tag.clone()),
        }
    }
}
