//! Groups: their members and policies. A user's groups are kept on the
//! user's record, so authorizing the user reads the user and its groups,
//! and a group lists its members by reading the users.

use std::collections::BTreeMap;

use berth_model::authz::Requirement;
use berth_model::{AwsError, RequestContext};
use berth_store::{Op, ReadView};
use berth_util::ids::unique_id;
use berth_util::time::{format_iso8601, now_secs};

use super::{authorize_list, list_by_path, user_xml, Checked, IamService, Kind};
use crate::records::{group_key, groups_prefix, user_key, users_prefix, GroupRecord, UserRecord};
use crate::user_not_found;
use crate::util::{
    already_exists, check_name, check_path, delete_conflict, get_json, limit_exceeded, list_json,
    no_such_entity, paginate, to_bytes, Params, Xml,
};

/// IAM's quota of groups per user.
const MAX_GROUPS_PER_USER: usize = 10;

pub(crate) fn group_not_found(name: &str) -> AwsError {
    no_such_entity(format!("The group with name {name} cannot be found."))
}

pub(super) fn group_xml(x: &mut Xml, tag: &str, group: &GroupRecord, account: &str) {
    x.open(tag)
        .text("Path", &group.path)
        .text("GroupName", &group.name)
        .text("GroupId", &group.id)
        .text("Arn", &group.arn(account))
        .text("CreateDate", &format_iso8601(group.created))
        .close(tag);
}

/// The users of `account` in the group `name`, in name order.
pub(super) fn members(
    view: &dyn ReadView,
    account: &str,
    name: &str,
) -> Result<Vec<UserRecord>, AwsError> {
    let mut users: Vec<UserRecord> = list_json::<UserRecord>(view, &users_prefix(account))?
        .into_iter()
        .filter(|u| u.groups.iter().any(|g| g.eq_ignore_ascii_case(name)))
        .collect();
    users.sort_by_key(|u| u.name.to_ascii_lowercase());
    Ok(users)
}

impl IamService {
    pub(super) async fn create_group(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let name = p.required("GroupName", "groupName")?;
        check_name(name, "groupName", 1, 128)?;
        let path = p.get("Path").unwrap_or("/");
        check_path(path)?;
        ctx.authorize(&[Requirement::new(
            "iam:CreateGroup",
            Kind::Group.arn(&ctx.account_id, path, name),
        )])?;
        let group = GroupRecord {
            name: name.to_string(),
            path: path.to_string(),
            id: unique_id("AGPA"),
            created: now_secs(),
            inline: BTreeMap::new(),
            attached: Vec::new(),
        };
        let key = group_key(&ctx.account_id, name);
        let value = to_bytes(&group)?;
        let taken = already_exists(format!("Group with name {name} already exists."));
        self.iam
            .update(move |view| {
                if view.get(&key).is_some() {
                    return Err(taken.clone());
                }
                Ok((vec![Op::put(key.clone(), value.clone())], ()))
            })
            .await?;
        let mut x = Xml::new();
        group_xml(&mut x, "Group", &group, &ctx.account_id);
        Ok(x.finish())
    }

    pub(super) fn get_group(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let name = Kind::Group.name(p)?;
        let max = p.max_items()?;
        let checked = self.authorize_holder(ctx, Kind::Group, "iam:GetGroup", name)?;
        let view: &dyn ReadView = self.iam.store();
        let group: GroupRecord = get_json(view, &group_key(&ctx.account_id, name))?
            .ok_or_else(|| group_not_found(name))?;
        checked.same(&group.id)?;
        let users: Vec<(String, UserRecord)> = members(view, &ctx.account_id, &group.name)?
            .into_iter()
            .map(|u| (u.name.to_ascii_lowercase(), u))
            .collect();
        let (page, next) = paginate(users, p.get("Marker"), max);
        let mut x = Xml::new();
        group_xml(&mut x, "Group", &group, &ctx.account_id);
        x.open("Users");
        for user in &page {
            user_xml(&mut x, "member", user, &ctx.account_id);
        }
        x.close("Users").page(next.as_deref());
        Ok(x.finish())
    }

    pub(super) fn list_groups(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        authorize_list(ctx, p, Kind::Group, "iam:ListGroups")?;
        let groups = list_json::<GroupRecord>(self.iam.store(), &groups_prefix(&ctx.account_id))?;
        list_by_path(
            p,
            groups,
            "Groups",
            |g| (&g.path, &g.name),
            |x, g| group_xml(x, "member", g, &ctx.account_id),
        )
    }

    pub(super) async fn delete_group(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let name = Kind::Group.name(p)?.to_string();
        let checked = self.authorize_holder(ctx, Kind::Group, "iam:DeleteGroup", &name)?;
        let account = ctx.account_id.clone();
        let key = group_key(&account, &name);
        self.iam
            .update(move |view| {
                let group: GroupRecord =
                    get_json(view, &key)?.ok_or_else(|| group_not_found(&name))?;
                checked.same(&group.id)?;
                if !members(view, &account, &group.name)?.is_empty() {
                    return Err(delete_conflict(
                        "Cannot delete entity, must remove users from group first.",
                    ));
                }
                super::check_no_policies(!group.inline.is_empty(), !group.attached.is_empty())?;
                Ok((vec![Op::delete(key.clone())], ()))
            })
            .await?;
        Ok(String::new())
    }

    pub(super) async fn update_group(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let name = Kind::Group.name(p)?.to_string();
        let new_name = p.get("NewGroupName");
        if let Some(n) = new_name {
            check_name(n, "newGroupName", 1, 128)?;
        }
        let new_path = p.get("NewPath");
        if let Some(path) = new_path {
            check_path(path)?;
        }
        let view: &dyn ReadView = self.iam.store();
        let current: Option<GroupRecord> = get_json(view, &group_key(&ctx.account_id, &name))?;
        let checked = self.authorize_holder(ctx, Kind::Group, "iam:UpdateGroup", &name)?;
        // Renaming or moving needs the permission on the new ARN as well.
        if let Some(group) = &current {
            let target = Kind::Group.arn(
                &ctx.account_id,
                new_path.unwrap_or(&group.path),
                new_name.unwrap_or(&group.name),
            );
            if target != group.arn(&ctx.account_id) {
                ctx.authorize(&[Requirement::new("iam:UpdateGroup", target)])?;
            }
        }
        let account = ctx.account_id.clone();
        let new_name = new_name.map(str::to_string);
        let new_path = new_path.map(str::to_string);
        self.iam
            .update(move |view| {
                let key = group_key(&account, &name);
                let mut group: GroupRecord =
                    get_json(view, &key)?.ok_or_else(|| group_not_found(&name))?;
                checked.same(&group.id)?;
                let old_name = group.name.clone();
                if let Some(path) = &new_path {
                    group.path = path.clone();
                }
                let mut ops = Vec::new();
                match &new_name {
                    Some(n) if *n != old_name => {
                        let new_key = group_key(&account, n);
                        if new_key != key {
                            if view.get(&new_key).is_some() {
                                return Err(already_exists(format!(
                                    "Group with name {n} already exists."
                                )));
                            }
                            ops.push(Op::delete(key.clone()));
                        }
                        group.name = n.clone();
                        for mut user in members(view, &account, &old_name)? {
                            for g in user.groups.iter_mut() {
                                if g.eq_ignore_ascii_case(&old_name) {
                                    *g = n.clone();
                                }
                            }
                            ops.push(Op::put(user_key(&account, &user.name), to_bytes(&user)?));
                        }
                        ops.push(Op::put(new_key, to_bytes(&group)?));
                    }
                    _ => ops.push(Op::put(key.clone(), to_bytes(&group)?)),
                }
                Ok((ops, ()))
            })
            .await?;
        Ok(String::new())
    }

    /// The group and user names of a membership call, checked.
    fn membership<'a>(p: &Params<'a>) -> Result<(&'a str, &'a str), AwsError> {
        let group = Kind::Group.name(p)?;
        let user = p.required("UserName", "userName")?;
        check_name(user, "userName", 1, 128)?;
        Ok((group, user))
    }

    pub(super) async fn add_user_to_group(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let (group, user) = Self::membership(p)?;
        let checked = self.authorize_holder(ctx, Kind::Group, "iam:AddUserToGroup", group)?;
        self.edit_membership(ctx, group, user, checked, true).await
    }

    pub(super) async fn remove_user_from_group(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let (group, user) = Self::membership(p)?;
        let checked = self.authorize_holder(ctx, Kind::Group, "iam:RemoveUserFromGroup", group)?;
        self.edit_membership(ctx, group, user, checked, false).await
    }

    async fn edit_membership(
        &self,
        ctx: &RequestContext,
        group: &str,
        user: &str,
        checked: Checked,
        add: bool,
    ) -> Result<String, AwsError> {
        let account = ctx.account_id.clone();
        let (group, user) = (group.to_string(), user.to_string());
        self.iam
            .update(move |view| {
                let record: GroupRecord = get_json(view, &group_key(&account, &group))?
                    .ok_or_else(|| group_not_found(&group))?;
                checked.same(&record.id)?;
                let key = user_key(&account, &user);
                let mut member: UserRecord =
                    get_json(view, &key)?.ok_or_else(|| user_not_found(&user))?;
                let at = member
                    .groups
                    .iter()
                    .position(|g| g.eq_ignore_ascii_case(&record.name));
                match (add, at) {
                    (true, Some(_)) => return Ok((Vec::new(), ())),
                    (true, None) => {
                        if member.groups.len() >= MAX_GROUPS_PER_USER {
                            return Err(limit_exceeded(format!(
                                "Cannot exceed quota for GroupsPerUser: {MAX_GROUPS_PER_USER}"
                            )));
                        }
                        member.groups.push(record.name.clone());
                    }
                    (false, Some(i)) => {
                        member.groups.remove(i);
                    }
                    (false, None) => return Err(user_not_found(&user)),
                }
                Ok((vec![Op::put(key, to_bytes(&member)?)], ()))
            })
            .await?;
        Ok(String::new())
    }

    pub(super) fn list_groups_for_user(
        &self,
        ctx: &RequestContext,
        p: &Params<'_>,
    ) -> Result<String, AwsError> {
        let name = Kind::User.name(p)?;
        let max = p.max_items()?;
        let checked = self.authorize_holder(ctx, Kind::User, "iam:ListGroupsForUser", name)?;
        let view: &dyn ReadView = self.iam.store();
        let user: UserRecord = get_json(view, &user_key(&ctx.account_id, name))?
            .ok_or_else(|| user_not_found(name))?;
        checked.same(&user.id)?;
        let mut groups = Vec::new();
        for group in &user.groups {
            if let Some(g) = get_json::<GroupRecord>(view, &group_key(&ctx.account_id, group))? {
                groups.push((g.name.to_ascii_lowercase(), g));
            }
        }
        groups.sort_by(|a, b| a.0.cmp(&b.0));
        let (page, next) = paginate(groups, p.get("Marker"), max);
        let mut x = Xml::new();
        x.open("Groups");
        for g in &page {
            group_xml(&mut x, "member", g, &ctx.account_id);
        }
        x.close("Groups").page(next.as_deref());
        Ok(x.finish())
    }
}
