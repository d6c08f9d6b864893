//! Policy variables (`${aws:username}`) in `Resource` and condition values.
//!
//! Only documents with `"Version": "2012-10-17"` get substitution; under
//! `2008-10-17` the text is literal, as AWS specifies. Besides context keys,
//! AWS defines `${*}`, `${?}` and `${$}` for literal `*`, `?` and `$`, and a
//! default value form `${key, 'default'}` used when the key is absent.
//!
//! A variable whose key is absent (and has no default) cannot be resolved;
//! AWS then treats the element as not matching, which the callers implement
//! by getting `None` back here.

use crate::matching::Token;

/// Compiles `text` into wildcard tokens, substituting policy variables when
/// `variables` is true. Substituted values are literal: a `*` inside a tag
/// value is not a wildcard.
///
/// Returns `None` when a variable cannot be resolved.
pub fn compile(
    text: &str,
    variables: bool,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Option<Vec<Token>> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if variables && rest.starts_with("${") {
            if let Some(end) = rest.find('}') {
                let inner = &rest[2..end];
                substitute(inner, lookup, &mut out)?;
                rest = &rest[end + 1..];
                continue;
            }
        }
        let mut chars = rest.chars();
        match chars.next() {
            Some('*') => out.push(Token::Star),
            Some('?') => out.push(Token::Quest),
            Some(c) => out.push(Token::Lit(c)),
            None => break,
        }
        rest = chars.as_str();
    }
    Some(out)
}

fn substitute(
    inner: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut Vec<Token>,
) -> Option<()> {
    let inner = inner.trim();
    match inner {
        "*" | "?" | "$" => {
            out.extend(inner.chars().map(Token::Lit));
            return Some(());
        }
        _ => {}
    }
    let (key, default) = match inner.split_once(',') {
        Some((key, default)) => (key.trim(), parse_default(default.trim())),
        None => (inner, None),
    };
    let value = lookup(key).or(default)?;
    out.extend(value.chars().map(Token::Lit));
    Some(())
}

/// Reads `'text'` with `''` standing for one quote.
fn parse_default(text: &str) -> Option<String> {
    let body = text.strip_prefix('\'')?.strip_suffix('\'')?;
    Some(body.replace("''", "'"))
}

/// True when `text` contains something that looks like a policy variable;
/// used to skip validation of values that can only be checked after
/// substitution.
pub fn has_variable(text: &str) -> bool {
    text.contains("${")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matching::{matches_tokens, to_plain};

    fn lookup(key: &str) -> Option<String> {
        match key.to_lowercase().as_str() {
            "aws:username" => Some("alice".into()),
            "aws:principaltag/team" => Some("blue*".into()),
            _ => None,
        }
    }

    #[test]
    fn substitution_table() {
        let cases: &[(&str, bool, Option<&str>)] = &[
            ("home/${aws:username}/*", true, Some("home/alice/*")),
            (
                "home/${aws:username}/*",
                false,
                Some("home/${aws:username}/*"),
            ),
            ("${aws:UserName}", true, Some("alice")),
            ("${ aws:username }", true, Some("alice")),
            ("a${*}b${?}c${$}d", true, Some("a*b?c$d")),
            ("${aws:missing}", true, None),
            ("${aws:missing, 'dflt'}", true, Some("dflt")),
            ("${aws:missing, 'it''s'}", true, Some("it's")),
            ("${aws:username, 'dflt'}", true, Some("alice")),
            (
                "unterminated ${aws:username",
                true,
                Some("unterminated ${aws:username"),
            ),
        ];
        for (text, vars, want) in cases {
            let got = compile(text, *vars, &lookup).map(|t| to_plain(&t));
            assert_eq!(got.as_deref(), *want, "{text}");
        }
    }

    #[test]
    fn substituted_values_and_escapes_are_literal() {
        let pat = compile("tag-${aws:PrincipalTag/team}", true, &lookup).expect("resolves");
        assert!(matches_tokens(&pat, "tag-blue*", false));
        assert!(!matches_tokens(&pat, "tag-blueberry", false));
        let pat = compile("file${*}", true, &lookup).expect("resolves");
        assert!(matches_tokens(&pat, "file*", false));
        assert!(!matches_tokens(&pat, "file1", false));
        let pat = compile("file*", true, &lookup).expect("resolves");
        assert!(matches_tokens(&pat, "file1", false));
    }
}
