//! Wildcard matching as IAM does it: `*` matches any run of characters
//! (including none), `?` matches exactly one character.
//!
//! Patterns are tokenised first so that a literal `*` produced by the policy
//! variable `${*}` (or by a substituted value) can be told apart from a
//! wildcard.

/// One element of a compiled wildcard pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    /// A character that must match itself.
    Lit(char),
    /// `*`: any run of characters, possibly empty.
    Star,
    /// `?`: exactly one character.
    Quest,
}

/// Tokenises `pattern` treating every `*` and `?` as a wildcard.
pub fn tokens(pattern: &str) -> Vec<Token> {
    pattern
        .chars()
        .map(|c| match c {
            '*' => Token::Star,
            '?' => Token::Quest,
            other => Token::Lit(other),
        })
        .collect()
}

/// Renders tokens back to a plain string (wildcards become `*`/`?`), for
/// operators that compare exactly and have no wildcard semantics.
pub fn to_plain(tokens: &[Token]) -> String {
    tokens
        .iter()
        .map(|t| match t {
            Token::Lit(c) => *c,
            Token::Star => '*',
            Token::Quest => '?',
        })
        .collect()
}

fn chars_eq(a: char, b: char, ignore_case: bool) -> bool {
    if a == b {
        return true;
    }
    ignore_case && a.to_lowercase().eq(b.to_lowercase())
}

/// Matches `text` against `pattern` in full.
///
/// Classic greedy matcher with single-star backtracking: linear in the common
/// case and O(n·m) at worst, with no recursion so hostile patterns cannot blow
/// the stack.
pub fn matches_tokens(pattern: &[Token], text: &str, ignore_case: bool) -> bool {
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Token::Star) => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(Token::Quest) => {
                p += 1;
                t += 1;
                continue;
            }
            Some(Token::Lit(c)) if chars_eq(*c, text[t], ignore_case) => {
                p += 1;
                t += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p.min(pattern.len())..]
        .iter()
        .all(|tok| *tok == Token::Star)
}

/// Matches `text` against a pattern string in which `*` and `?` are wildcards.
pub fn wildcard_match(pattern: &str, text: &str, ignore_case: bool) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        return glob_ascii(pattern.as_bytes(), text.as_bytes(), ignore_case);
    }
    matches_tokens(&tokens(pattern), text, ignore_case)
}

/// [`matches_tokens`] for ASCII pattern and text, without allocating: the
/// hot path of every evaluation (actions and ARNs are ASCII).
fn glob_ascii(pattern: &[u8], text: &[u8], ignore_case: bool) -> bool {
    let eq = |a: u8, b: u8| a == b || (ignore_case && a.eq_ignore_ascii_case(&b));
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(b'?') => {
                p += 1;
                t += 1;
                continue;
            }
            Some(&c) if eq(c, text[t]) => {
                p += 1;
                t += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((sp, st)) => {
                p = sp + 1;
                t = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&b| b == b'*')
}

/// [`arn_matches`] for ASCII pattern and ARN, without allocating.
fn arn_matches_ascii(pattern: &str, arn: &str) -> bool {
    let components = pattern.bytes().filter(|&b| b == b':').count().min(5) + 1;
    let mut pattern_parts = pattern.splitn(components, ':');
    let mut arn_parts = arn.splitn(components, ':');
    loop {
        match (pattern_parts.next(), arn_parts.next()) {
            (Some(p), Some(a)) => {
                if !glob_ascii(p.as_bytes(), a.as_bytes(), false) {
                    return false;
                }
            }
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Matches an action (`ecs:DescribeClusters`) against a policy action
/// pattern. IAM compares actions case-insensitively.
pub fn action_matches(pattern: &str, action: &str) -> bool {
    wildcard_match(pattern, action, true)
}

/// Splits `items` at `colon` into at most `max` components; the last
/// component keeps any further colons.
fn split_components<T: Copy + PartialEq>(items: &[T], colon: T, max: usize) -> Vec<&[T]> {
    let mut parts = Vec::with_capacity(max);
    let mut start = 0;
    for (i, item) in items.iter().enumerate() {
        if parts.len() + 1 == max {
            break;
        }
        if *item == colon {
            parts.push(&items[start..i]);
            start = i + 1;
        }
    }
    parts.push(&items[start..]);
    parts
}

/// Matches an ARN against an ARN pattern the way `ArnLike` and the
/// `Resource` element do: each of the six colon-separated components is
/// matched on its own, so a wildcard in the region cannot swallow the account.
///
/// A pattern with fewer than six components (`*`, `arn:*`,
/// `arn:aws:ecs:*`) has its components matched in order and its last
/// component matched against the whole remainder of the ARN, colons
/// included; that is what lets `*` match every resource while
/// `arn:aws:ecs:*:cluster/a` (a component short) matches nothing.
pub fn arn_matches_tokens(pattern: &[Token], arn: &str) -> bool {
    let pparts = split_components(pattern, Token::Lit(':'), 6);
    let chars: Vec<char> = arn.chars().collect();
    let aparts = split_components(&chars, ':', pparts.len());
    if aparts.len() != pparts.len() {
        return false;
    }
    pparts.iter().zip(aparts.iter()).all(|(p, a)| {
        let text: String = a.iter().collect();
        matches_tokens(p, &text, false)
    })
}

/// String form of [`arn_matches_tokens`] where `*` and `?` are wildcards.
pub fn arn_matches(pattern: &str, arn: &str) -> bool {
    if pattern.is_ascii() && arn.is_ascii() {
        return arn_matches_ascii(pattern, arn);
    }
    arn_matches_tokens(&tokens(pattern), arn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn literal(text: &str) -> Vec<Token> {
        text.chars().map(Token::Lit).collect()
    }

    proptest! {
        #[test]
        fn ascii_fast_paths_agree_with_the_token_matcher(
            pattern in "[a-c:*?/]{0,12}",
            text in "[a-cA-C:/]{0,14}",
            ignore_case in any::<bool>(),
        ) {
            prop_assert_eq!(
                glob_ascii(pattern.as_bytes(), text.as_bytes(), ignore_case),
                matches_tokens(&tokens(&pattern), &text, ignore_case)
            );
            prop_assert_eq!(
                arn_matches_ascii(&pattern, &text),
                arn_matches_tokens(&tokens(&pattern), &text)
            );
        }
    }

    #[test]
    fn wildcard_table() {
        let cases: &[(&str, &str, bool, bool)] = &[
            ("*", "", false, true),
            ("*", "anything", false, true),
            ("", "", false, true),
            ("", "a", false, false),
            ("a?c", "abc", false, true),
            ("a?c", "ac", false, false),
            ("a*c", "ac", false, true),
            ("a*c", "abbbc", false, true),
            ("a*c", "abbbd", false, false),
            ("*.txt", "x.txt", false, true),
            ("*.txt", "x.TXT", false, false),
            ("*.txt", "x.TXT", true, true),
            ("ecs:Describe*", "ecs:DescribeClusters", true, true),
            ("ecs:describe*", "ECS:DescribeClusters", true, true),
            ("ecs:List*", "ecs:DescribeClusters", true, false),
            ("a*b*c", "aXbYc", false, true),
            ("a*b*c", "aXcYb", false, false),
            ("**", "x", false, true),
            ("?", "é", false, true),
        ];
        for (pattern, text, ic, want) in cases {
            assert_eq!(
                wildcard_match(pattern, text, *ic),
                *want,
                "{pattern:?} vs {text:?} (ignore_case={ic})"
            );
        }
    }

    #[test]
    fn arn_matching_is_per_component() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "arn:aws:ecs:us-east-1:123456789012:cluster/a", true),
            (
                "arn:aws:ecs:*:*:*",
                "arn:aws:ecs:us-east-1:123456789012:cluster/a",
                true,
            ),
            (
                "arn:aws:ecs:*:*:cluster/*",
                "arn:aws:ecs:us-east-1:1:cluster/a",
                true,
            ),
            (
                "arn:aws:ecs:*:*:cluster/*",
                "arn:aws:ecs:us-east-1:1:service/a/b",
                false,
            ),
            // A wildcard in one component cannot span a colon.
            (
                "arn:aws:ecs:*:cluster/a",
                "arn:aws:ecs:us-east-1:1:cluster/a",
                false,
            ),
            // A short pattern's last component takes the rest of the ARN.
            ("arn:*", "arn:aws:ecs:us-east-1:1:cluster/a", true),
            ("arn:aws:ecs:*", "arn:aws:ecs:us-east-1:1:cluster/a", true),
            ("arn:aws:ecr:*", "arn:aws:ecs:us-east-1:1:cluster/a", false),
            ("arn:aws:ecs:*:*:*", "*", false),
            ("arn:aws:s3:::bucket/*", "arn:aws:s3:::bucket/a/b.txt", true),
            ("arn:aws:s3:::bucket/*", "arn:aws:s3:::other/a", false),
            (
                "arn:aws:logs:*:*:log-group:/ecs/*:*",
                "arn:aws:logs:us-east-1:1:log-group:/ecs/web:log-stream:x",
                true,
            ),
            // Resource matching is case-sensitive.
            ("arn:aws:s3:::Bucket", "arn:aws:s3:::bucket", false),
            ("arn:aws:ecs:us-east-1:1:cluster/a", "not-an-arn", false),
        ];
        for (pattern, arn, want) in cases {
            assert_eq!(arn_matches(pattern, arn), *want, "{pattern:?} vs {arn:?}");
        }
    }

    #[test]
    fn literal_star_token_is_not_a_wildcard() {
        let mut pat = literal("a");
        pat.push(Token::Lit('*'));
        assert!(matches_tokens(&pat, "a*", false));
        assert!(!matches_tokens(&pat, "ab", false));
    }

    proptest! {
        #[test]
        fn literal_text_matches_itself(s in "[a-zA-Z0-9:/._-]{0,40}") {
            prop_assert!(matches_tokens(&literal(&s), &s, false));
        }

        #[test]
        fn star_matches_everything(s in ".{0,40}") {
            prop_assert!(wildcard_match("*", &s, false));
        }

        #[test]
        fn prefix_star(prefix in "[a-z]{0,10}", rest in "[a-z]{0,10}") {
            let text = format!("{prefix}{rest}");
            let pattern = format!("{prefix}*");
            prop_assert!(wildcard_match(&pattern, &text, false));
        }

        #[test]
        fn question_marks_match_exact_length(s in "[a-z]{0,12}", n in 0usize..14) {
            let pattern = "?".repeat(n);
            prop_assert_eq!(wildcard_match(&pattern, &s, false), s.chars().count() == n);
        }

        #[test]
        fn case_insensitive_agrees_with_lowercasing(p in "[a-zA-Z*?]{0,8}", s in "[a-zA-Z]{0,12}") {
            prop_assert_eq!(
                wildcard_match(&p, &s, true),
                wildcard_match(&p.to_lowercase(), &s.to_lowercase(), false)
            );
        }

        #[test]
        fn matcher_agrees_with_reference(p in "[ab*?]{0,7}", s in "[ab]{0,9}") {
            prop_assert_eq!(wildcard_match(&p, &s, false), reference(&tokens(&p), &s.chars().collect::<Vec<_>>()));
        }
    }

    /// Exponential but obviously-correct recursive matcher for cross-checking.
    fn reference(p: &[Token], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(Token::Star) => (0..=s.len()).any(|i| reference(&p[1..], &s[i..])),
            Some(Token::Quest) => !s.is_empty() && reference(&p[1..], &s[1..]),
            Some(Token::Lit(c)) => s.first() == Some(c) && reference(&p[1..], &s[1..]),
        }
    }
}
