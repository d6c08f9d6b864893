//! Root credentials: from `BERTH_ROOT_ACCESS_KEY_ID`/`BERTH_ROOT_SECRET_ACCESS_KEY`,
//! else from `<data-dir>/credentials`, else generated there on first start.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use berth_util::ids;
use berth_util::private_file::read_or_create_private;

pub const PROFILE: &str = "berth";

/// Where the root keys came from; decides what the banner prints.
pub enum Origin {
    Environment,
    /// Read from an existing credentials file.
    File(PathBuf),
    /// Generated now and written to the file: print the secret this once.
    Generated(PathBuf),
}

pub struct RootKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub origin: Origin,
}

/// Reads `aws_access_key_id`/`aws_secret_access_key` of `[berth]` from an INI file.
pub(crate) fn parse_profile(text: &str) -> Option<(String, String)> {
    let mut in_profile = false;
    let (mut id, mut secret) = (None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_profile = line == format!("[{PROFILE}]");
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "aws_access_key_id" => id = Some(v.trim().to_string()),
                "aws_secret_access_key" => secret = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    Some((id?, secret?))
}

pub fn load_or_create(data_dir: &Path) -> anyhow::Result<RootKeys> {
    let env_id = std::env::var("BERTH_ROOT_ACCESS_KEY_ID")
        .ok()
        .filter(|v| !v.is_empty());
    let env_secret = std::env::var("BERTH_ROOT_SECRET_ACCESS_KEY")
        .ok()
        .filter(|v| !v.is_empty());
    match (env_id, env_secret) {
        (Some(access_key_id), Some(secret_access_key)) => {
            return Ok(RootKeys {
                access_key_id,
                secret_access_key,
                origin: Origin::Environment,
            })
        }
        (None, None) => {}
        _ => {
            bail!("set both BERTH_ROOT_ACCESS_KEY_ID and BERTH_ROOT_SECRET_ACCESS_KEY, or neither")
        }
    }
    let path = data_dir.join("credentials");
    let (bytes, generated) = read_or_create_private(&path, || {
        format!(
            "[{PROFILE}]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            ids::access_key_id("AKIA"),
            ids::secret_access_key()
        )
        .into_bytes()
    })
    .with_context(|| format!("reading or creating {}", path.display()))?;
    let (access_key_id, secret_access_key) = std::str::from_utf8(&bytes)
        .ok()
        .and_then(parse_profile)
        .with_context(|| {
            format!(
                "{} has no [{PROFILE}] profile with both keys",
                path.display()
            )
        })?;
    Ok(RootKeys {
        access_key_id,
        secret_access_key,
        origin: if generated {
            Origin::Generated(path)
        } else {
            Origin::File(path)
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_only_the_berth_profile() {
        let text = "[default]\naws_access_key_id = X\naws_secret_access_key = Y\n[berth]\naws_access_key_id = AKIA1\naws_secret_access_key = s/ecret=\n";
        assert_eq!(
            parse_profile(text),
            Some(("AKIA1".to_string(), "s/ecret=".to_string()))
        );
        assert_eq!(parse_profile("[berth]\naws_access_key_id = A\n"), None);
    }
}
