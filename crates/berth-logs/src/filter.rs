//! The CloudWatch Logs filter pattern language: parse once, match many.
//!
//! Three forms, chosen by the first character:
//! - terms: `ERROR`, `"INTERNAL SERVER ERROR"`, `?ERROR ?WARN`, `ERROR -DEBUG`,
//!   `%regex%`; case-sensitive and matched anywhere in the message;
//! - JSON (`{ … }`): selectors such as `$.a.b[0]` compared with `=`, `!=`,
//!   `<`, `<=`, `>`, `>=`, combined with `&&`, `||` and parentheses, plus
//!   `IS NULL`, `NOT EXISTS`, `IS TRUE`, `IS FALSE`; `*` is a wildcard in
//!   string values and `= *` means "has any value";
//! - space-delimited (`[ … ]`): named fields matched against the message's
//!   space-separated fields (`"…"` and `[…]` group), `...` for any number of
//!   fields, each field with optional conditions.
//!
//! An empty pattern matches everything.

use std::collections::BTreeMap;
use std::fmt;

/// A pattern that failed to parse; the text says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError(pub String);

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FilterError {}

fn err<T>(message: impl Into<String>) -> Result<T, FilterError> {
    Err(FilterError(message.into()))
}

/// A parsed filter pattern.
#[derive(Debug, Clone)]
pub struct FilterPattern {
    form: Form,
}

#[derive(Debug, Clone)]
enum Form {
    All,
    Terms(TermSet),
    Json(JsonExpr),
    Space(Vec<SpaceField>),
}

impl FilterPattern {
    /// Parses a pattern as FilterLogEvents receives it.
    pub fn parse(text: &str) -> Result<FilterPattern, FilterError> {
        let trimmed = text.trim();
        let form = if trimmed.is_empty() || trimmed == "\"\"" {
            Form::All
        } else if trimmed.starts_with('{') {
            Form::Json(parse_json(trimmed)?)
        } else if trimmed.starts_with('[') {
            Form::Space(parse_space(trimmed)?)
        } else {
            Form::Terms(parse_terms(trimmed)?)
        };
        Ok(FilterPattern { form })
    }

    /// Whether an event's message matches.
    pub fn matches(&self, message: &str) -> bool {
        match &self.form {
            Form::All => true,
            Form::Terms(terms) => terms.matches(message),
            Form::Json(expr) => match serde_json::from_str::<serde_json::Value>(message) {
                Ok(doc) => expr.eval(&doc),
                Err(_) => false,
            },
            Form::Space(fields) => {
                let values = split_fields(message);
                match_fields(fields, &values)
            }
        }
    }

    /// Whether the pattern matches every event (no filtering needed).
    pub fn is_match_all(&self) -> bool {
        matches!(self.form, Form::All)
    }

    /// Whether this is a JSON pattern (`{ … }`).
    pub fn is_json(&self) -> bool {
        matches!(self.form, Form::Json(_))
    }

    /// The names of a space-delimited pattern's fields (none otherwise).
    pub fn field_names(&self) -> Vec<&str> {
        match &self.form {
            Form::Space(fields) => fields
                .iter()
                .filter_map(|f| match f {
                    SpaceField::Named(name, _) => Some(name.as_str()),
                    SpaceField::Ellipsis => None,
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// What TestMetricFilter reports for a matching message: each named
    /// field of a space-delimited pattern as `$name` with the value it took
    /// (empty for other patterns); `None` when the message does not match.
    pub fn extract(&self, message: &str) -> Option<BTreeMap<String, String>> {
        match &self.form {
            Form::Space(fields) => {
                let values = split_fields(message);
                let mut bound = Vec::new();
                bind_fields(fields, &values, &mut bound).then(|| {
                    bound
                        .into_iter()
                        .map(|(name, value)| (format!("${name}"), value.to_string()))
                        .collect()
                })
            }
            _ => self.matches(message).then(BTreeMap::new),
        }
    }
}

// ---------------------------------------------------------------- terms ---

#[derive(Debug, Clone)]
enum Term {
    Text(String),
    Regex(regex::Regex),
}

impl Term {
    fn found_in(&self, message: &str) -> bool {
        match self {
            Term::Text(text) => message.contains(text.as_str()),
            Term::Regex(re) => re.is_match(message),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct TermSet {
    all: Vec<Term>,
    any: Vec<Term>,
    none: Vec<Term>,
}

impl TermSet {
    fn matches(&self, message: &str) -> bool {
        self.all.iter().all(|t| t.found_in(message))
            && (self.any.is_empty() || self.any.iter().any(|t| t.found_in(message)))
            && !self.none.iter().any(|t| t.found_in(message))
    }
}

fn compile_regex(body: &str) -> Result<regex::Regex, FilterError> {
    regex::Regex::new(body).or_else(|e| err(format!("Invalid regular expression %{body}%: {e}")))
}

/// Reads a `"…"` string starting at `chars[*i] == '"'`; `\"` and `\\` escape.
fn read_quoted(chars: &[char], i: &mut usize) -> Result<String, FilterError> {
    *i += 1;
    let mut out = String::new();
    while *i < chars.len() {
        match chars[*i] {
            '"' => {
                *i += 1;
                return Ok(out);
            }
            '\\' if *i + 1 < chars.len() && matches!(chars[*i + 1], '"' | '\\') => {
                out.push(chars[*i + 1]);
                *i += 2;
            }
            c => {
                out.push(c);
                *i += 1;
            }
        }
    }
    err("Unterminated quoted string")
}

/// Reads a `%…%` regular expression starting at `chars[*i] == '%'`.
fn read_regex(chars: &[char], i: &mut usize) -> Result<regex::Regex, FilterError> {
    *i += 1;
    let mut body = String::new();
    while *i < chars.len() {
        match chars[*i] {
            '%' => {
                *i += 1;
                return compile_regex(&body);
            }
            '\\' if *i + 1 < chars.len() && chars[*i + 1] == '%' => {
                body.push('%');
                *i += 2;
            }
            c => {
                body.push(c);
                *i += 1;
            }
        }
    }
    err("Unterminated regular expression")
}

fn parse_terms(text: &str) -> Result<TermSet, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut set = TermSet::default();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let bucket = match chars[i] {
            '?' => {
                i += 1;
                &mut set.any
            }
            '-' => {
                i += 1;
                &mut set.none
            }
            _ => &mut set.all,
        };
        let term = match chars.get(i) {
            None => return err("A term is missing after '?' or '-'"),
            Some('"') => Term::Text(read_quoted(&chars, &mut i)?),
            Some('%') => Term::Regex(read_regex(&chars, &mut i)?),
            Some(c) if c.is_whitespace() => return err("A term is missing after '?' or '-'"),
            Some(_) => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() {
                    if chars[i] == '"' {
                        return err("Quotes must enclose a whole term");
                    }
                    i += 1;
                }
                Term::Text(chars[start..i].iter().collect())
            }
        };
        if matches!(&term, Term::Text(t) if t.is_empty()) {
            // `""` alone matches everything; as one term among others it
            // adds no condition.
            continue;
        }
        bucket.push(term);
    }
    Ok(set)
}

// ---------------------------------------------------------------- lexer ---

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    And,
    Or,
    Op(CmpOp),
    Quoted(String),
    Regex(String),
    Word(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, '(' | ')' | '"' | '&' | '|' | '=' | '!' | '<' | '>' | '%')
}

fn lex(text: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            '&' if next == Some('&') => {
                tokens.push(Token::And);
                i += 2;
            }
            '|' if next == Some('|') => {
                tokens.push(Token::Or);
                i += 2;
            }
            '=' => {
                tokens.push(Token::Op(CmpOp::Eq));
                i += 1;
            }
            '!' if next == Some('=') => {
                tokens.push(Token::Op(CmpOp::Ne));
                i += 2;
            }
            '<' if next == Some('=') => {
                tokens.push(Token::Op(CmpOp::Le));
                i += 2;
            }
            '>' if next == Some('=') => {
                tokens.push(Token::Op(CmpOp::Ge));
                i += 2;
            }
            '<' => {
                tokens.push(Token::Op(CmpOp::Lt));
                i += 1;
            }
            '>' => {
                tokens.push(Token::Op(CmpOp::Gt));
                i += 1;
            }
            '"' => tokens.push(Token::Quoted(read_quoted(&chars, &mut i)?)),
            '%' => {
                let start = i;
                read_regex(&chars, &mut i)?;
                let body: String = chars[start + 1..i - 1].iter().collect();
                tokens.push(Token::Regex(body.replace("\\%", "%")));
            }
            c if is_word_char(c) => {
                let start = i;
                while i < chars.len() && is_word_char(chars[i]) {
                    i += 1;
                }
                tokens.push(Token::Word(chars[start..i].iter().collect()));
            }
            other => return err(format!("Unexpected character '{other}'")),
        }
    }
    Ok(tokens)
}

// --------------------------------------------------------------- values ---

/// The right-hand side of a comparison.
#[derive(Debug, Clone)]
enum Literal {
    /// A number; compared numerically (and as text against string fields).
    Number {
        value: f64,
        text: String,
    },
    /// A string, `*` being a wildcard.
    Glob(String),
    Regex(regex::Regex),
    /// `*` alone: any value.
    Any,
}

fn literal_from(token: &Token) -> Result<Literal, FilterError> {
    match token {
        Token::Quoted(text) => Ok(Literal::Glob(text.clone())),
        Token::Regex(body) => Ok(Literal::Regex(compile_regex(body)?)),
        Token::Word(word) if word == "*" => Ok(Literal::Any),
        Token::Word(word) => match word.parse::<f64>() {
            Ok(value) if value.is_finite() => Ok(Literal::Number {
                value,
                text: word.clone(),
            }),
            _ => Ok(Literal::Glob(word.clone())),
        },
        other => err(format!("Expected a value, found {other:?}")),
    }
}

/// Matches `text` against a glob where `*` stands for any run of characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A comparison on a text field (space-delimited patterns).
fn compare_text(field: &str, op: CmpOp, literal: &Literal) -> bool {
    match (op, literal) {
        (_, Literal::Any) => matches!(op, CmpOp::Eq),
        (CmpOp::Eq | CmpOp::Ne, Literal::Glob(g)) => glob_match(g, field) == (op == CmpOp::Eq),
        (CmpOp::Eq | CmpOp::Ne, Literal::Regex(re)) => re.is_match(field) == (op == CmpOp::Eq),
        (_, Literal::Number { value, text }) => match field.parse::<f64>() {
            Ok(n) => compare_numbers(n, op, *value),
            Err(_) => match op {
                CmpOp::Eq => field == text,
                CmpOp::Ne => field != text,
                _ => false,
            },
        },
        _ => false,
    }
}

fn compare_numbers(left: f64, op: CmpOp, right: f64) -> bool {
    match op {
        CmpOp::Eq => left == right,
        CmpOp::Ne => left != right,
        CmpOp::Lt => left < right,
        CmpOp::Le => left <= right,
        CmpOp::Gt => left > right,
        CmpOp::Ge => left >= right,
    }
}

// ----------------------------------------------------------------- JSON ---

#[derive(Debug, Clone, PartialEq)]
enum PathStep {
    Key(String),
    Index(usize),
}

#[derive(Debug, Clone)]
enum Check {
    Compare(CmpOp, Literal),
    IsNull,
    NotExists,
    IsTrue,
    IsFalse,
}

#[derive(Debug, Clone)]
enum JsonExpr {
    And(Box<JsonExpr>, Box<JsonExpr>),
    Or(Box<JsonExpr>, Box<JsonExpr>),
    Test(Vec<PathStep>, Check),
}

impl JsonExpr {
    fn eval(&self, doc: &serde_json::Value) -> bool {
        match self {
            JsonExpr::And(a, b) => a.eval(doc) && b.eval(doc),
            JsonExpr::Or(a, b) => a.eval(doc) || b.eval(doc),
            JsonExpr::Test(path, check) => check_value(resolve(doc, path), check),
        }
    }
}

fn resolve<'a>(doc: &'a serde_json::Value, path: &[PathStep]) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(doc, |node, step| match step {
        PathStep::Key(key) => node.as_object()?.get(key),
        PathStep::Index(i) => node.as_array()?.get(*i),
    })
}

fn check_value(value: Option<&serde_json::Value>, check: &Check) -> bool {
    use serde_json::Value;
    match check {
        Check::IsNull => matches!(value, Some(Value::Null)),
        Check::NotExists => value.is_none(),
        Check::IsTrue => matches!(value, Some(Value::Bool(true))),
        Check::IsFalse => matches!(value, Some(Value::Bool(false))),
        Check::Compare(op, literal) => {
            let Some(value) = value else { return false };
            match (value, literal) {
                (Value::Null, _) => false,
                (_, Literal::Any) => *op == CmpOp::Eq,
                (Value::Number(n), Literal::Number { value: right, .. }) => n
                    .as_f64()
                    .is_some_and(|left| compare_numbers(left, *op, *right)),
                (Value::String(s), _) => compare_text(s, *op, literal),
                (Value::Bool(b), Literal::Glob(_)) => {
                    compare_text(if *b { "true" } else { "false" }, *op, literal)
                }
                (Value::Number(n), Literal::Glob(_) | Literal::Regex(_)) => {
                    compare_text(&n.to_string(), *op, literal)
                }
                _ => false,
            }
        }
    }
}

fn parse_selector(word: &str) -> Result<Vec<PathStep>, FilterError> {
    let Some(rest) = word.strip_prefix('$') else {
        return err(format!(
            "Expected a selector starting with '$', found '{word}'"
        ));
    };
    let chars: Vec<char> = rest.chars().collect();
    let mut path = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '.' => {
                i += 1;
                let start = i;
                while i < chars.len() && !matches!(chars[i], '.' | '[' | ']') {
                    i += 1;
                }
                if start == i {
                    return err(format!("Empty property name in selector '{word}'"));
                }
                path.push(PathStep::Key(chars[start..i].iter().collect()));
            }
            '[' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
                let index: String = chars[start..i].iter().collect();
                if i >= chars.len() {
                    return err(format!("Unclosed '[' in selector '{word}'"));
                }
                i += 1;
                let index = index
                    .trim()
                    .parse::<usize>()
                    .or_else(|_| err(format!("Array index must be a number in '{word}'")))?;
                path.push(PathStep::Index(index));
            }
            _ => return err(format!("Invalid selector '{word}'")),
        }
    }
    if path.is_empty() {
        return err("A selector must name a property, e.g. $.level");
    }
    Ok(path)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn next_keyword(&mut self, expected: &str) -> Result<(), FilterError> {
        match self.next() {
            Some(Token::Word(w)) if w.eq_ignore_ascii_case(expected) => Ok(()),
            other => err(format!("Expected {expected}, found {other:?}")),
        }
    }

    fn or_expr(&mut self) -> Result<JsonExpr, FilterError> {
        let mut left = self.and_expr()?;
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            let right = self.and_expr()?;
            left = JsonExpr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<JsonExpr, FilterError> {
        let mut left = self.unary()?;
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            let right = self.unary()?;
            left = JsonExpr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<JsonExpr, FilterError> {
        match self.next() {
            Some(Token::Open) => {
                let inner = self.or_expr()?;
                match self.next() {
                    Some(Token::Close) => Ok(inner),
                    _ => err("Missing ')'"),
                }
            }
            Some(Token::Word(word)) => {
                let path = parse_selector(&word)?;
                let check = self.check()?;
                Ok(JsonExpr::Test(path, check))
            }
            other => err(format!("Expected a selector or '(', found {other:?}")),
        }
    }

    fn check(&mut self) -> Result<Check, FilterError> {
        match self.next() {
            Some(Token::Op(op)) => {
                let token = self
                    .next()
                    .ok_or_else(|| FilterError("A comparison is missing its value".into()))?;
                let literal = literal_from(&token)?;
                check_operator(op, &literal)?;
                Ok(Check::Compare(op, literal))
            }
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("IS") => match self.next() {
                Some(Token::Word(w)) if w.eq_ignore_ascii_case("NULL") => Ok(Check::IsNull),
                Some(Token::Word(w)) if w.eq_ignore_ascii_case("TRUE") => Ok(Check::IsTrue),
                Some(Token::Word(w)) if w.eq_ignore_ascii_case("FALSE") => Ok(Check::IsFalse),
                other => err(format!(
                    "Expected NULL, TRUE or FALSE after IS, found {other:?}"
                )),
            },
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("NOT") => {
                self.next_keyword("EXISTS")?;
                Ok(Check::NotExists)
            }
            other => err(format!("Expected a comparison, found {other:?}")),
        }
    }
}

/// Ordering comparisons only make sense on numbers.
fn check_operator(op: CmpOp, literal: &Literal) -> Result<(), FilterError> {
    let ordering = matches!(op, CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge);
    if ordering && !matches!(literal, Literal::Number { .. }) {
        return err("Numeric comparisons (<, <=, >, >=) need a number");
    }
    Ok(())
}

fn parse_json(text: &str) -> Result<JsonExpr, FilterError> {
    let Some(inner) = text
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
    else {
        return err("A JSON pattern must be enclosed in { }");
    };
    let mut parser = Parser {
        tokens: lex(inner)?,
        pos: 0,
    };
    if parser.tokens.is_empty() {
        return err("A JSON pattern needs at least one condition");
    }
    let expr = parser.or_expr()?;
    if parser.pos != parser.tokens.len() {
        return err("Unexpected text after the end of the expression");
    }
    Ok(expr)
}

// ------------------------------------------------------ space-delimited ---

#[derive(Debug, Clone)]
enum SpaceField {
    /// `...`: any number of fields, including none.
    Ellipsis,
    /// A named field with optional conditions (`status = 4* || status = 5*`).
    Named(String, Option<FieldCond>),
}

#[derive(Debug, Clone)]
enum FieldCond {
    Cmp(CmpOp, Literal),
    And(Box<FieldCond>, Box<FieldCond>),
    Or(Box<FieldCond>, Box<FieldCond>),
}

impl FieldCond {
    fn eval(&self, field: &str) -> bool {
        match self {
            FieldCond::Cmp(op, literal) => compare_text(field, *op, literal),
            FieldCond::And(a, b) => a.eval(field) && b.eval(field),
            FieldCond::Or(a, b) => a.eval(field) || b.eval(field),
        }
    }
}

/// Splits the inside of `[ … ]` on commas that are not inside quotes.
fn split_commas(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut regex = false;
    for c in text.chars() {
        match c {
            '"' if !regex => quoted = !quoted,
            '%' if !quoted => regex = !regex,
            ',' if !quoted && !regex => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
}

fn parse_field(text: &str) -> Result<SpaceField, FilterError> {
    let text = text.trim();
    if text == "..." {
        return Ok(SpaceField::Ellipsis);
    }
    let tokens = lex(text)?;
    let mut iter = tokens.into_iter().peekable();
    let name = match iter.next() {
        Some(Token::Word(name)) => name,
        other => return err(format!("Expected a field name, found {other:?}")),
    };
    let mut cond: Option<FieldCond> = None;
    let mut joiner: Option<Token> = None;
    while let Some(token) = iter.next() {
        let op = match token {
            Token::Op(op) => op,
            // `a = 1 && a = 2`: the repeated field name is optional.
            Token::Word(ref w) if *w == name && joiner.is_some() => match iter.next() {
                Some(Token::Op(op)) => op,
                other => return err(format!("Expected a comparison, found {other:?}")),
            },
            other => return err(format!("Expected a comparison, found {other:?}")),
        };
        let value = iter
            .next()
            .ok_or_else(|| FilterError("A comparison is missing its value".into()))?;
        let literal = literal_from(&value)?;
        check_operator(op, &literal)?;
        let this = FieldCond::Cmp(op, literal);
        cond = Some(match (cond.take(), joiner.take()) {
            (None, None) => this,
            (Some(prev), Some(Token::And)) => FieldCond::And(Box::new(prev), Box::new(this)),
            (Some(prev), Some(Token::Or)) => FieldCond::Or(Box::new(prev), Box::new(this)),
            _ => {
                return err(format!(
                    "Conditions on '{name}' must be joined with && or ||"
                ))
            }
        });
        match iter.next() {
            None => break,
            Some(t @ (Token::And | Token::Or)) => joiner = Some(t),
            Some(other) => return err(format!("Unexpected {other:?} in field '{name}'")),
        }
    }
    if joiner.is_some() {
        return err(format!("Dangling && or || in field '{name}'"));
    }
    Ok(SpaceField::Named(name, cond))
}

fn parse_space(text: &str) -> Result<Vec<SpaceField>, FilterError> {
    let Some(inner) = text
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
    else {
        return err("A space-delimited pattern must be enclosed in [ ]");
    };
    if inner.trim().is_empty() {
        return err("A space-delimited pattern needs at least one field");
    }
    split_commas(inner)
        .iter()
        .map(|part| parse_field(part))
        .collect()
}

/// Splits a message into fields: runs of non-space characters, with `"…"`
/// and `[…]` each forming one field (without the delimiters).
fn split_fields(message: &str) -> Vec<&str> {
    let bytes = message.as_bytes();
    let mut fields = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let closer = match bytes[i] {
            b'"' => Some(b'"'),
            b'[' => Some(b']'),
            _ => None,
        };
        if let Some(closer) = closer {
            let start = i + 1;
            let end = bytes[start..]
                .iter()
                .position(|b| *b == closer)
                .map_or(bytes.len(), |p| start + p);
            fields.push(&message[start..end]);
            i = end + 1;
        } else {
            let start = i;
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            fields.push(&message[start..i]);
        }
    }
    fields
}

fn match_fields(pattern: &[SpaceField], values: &[&str]) -> bool {
    match pattern.split_first() {
        None => values.is_empty(),
        Some((SpaceField::Ellipsis, rest)) => {
            (0..=values.len()).any(|skip| match_fields(rest, &values[skip..]))
        }
        Some((SpaceField::Named(_, cond), rest)) => match values.split_first() {
            None => false,
            Some((value, more)) => {
                cond.as_ref().is_none_or(|c| c.eval(value)) && match_fields(rest, more)
            }
        },
    }
}

/// Like [`match_fields`], recording which value each named field took.
fn bind_fields<'v>(
    pattern: &[SpaceField],
    values: &[&'v str],
    bound: &mut Vec<(String, &'v str)>,
) -> bool {
    match pattern.split_first() {
        None => values.is_empty(),
        Some((SpaceField::Ellipsis, rest)) => {
            (0..=values.len()).any(|skip| bind_fields(rest, &values[skip..], bound))
        }
        Some((SpaceField::Named(name, cond), rest)) => match values.split_first() {
            None => false,
            Some((value, more)) => {
                if !cond.as_ref().is_none_or(|c| c.eval(value)) {
                    return false;
                }
                bound.push((name.clone(), value));
                if bind_fields(rest, more, bound) {
                    true
                } else {
                    bound.pop();
                    false
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pattern: &str, cases: &[(&str, bool)]) {
        let parsed = FilterPattern::parse(pattern)
            .unwrap_or_else(|e| panic!("pattern {pattern:?} did not parse: {e}"));
        for (message, expected) in cases {
            assert_eq!(
                parsed.matches(message),
                *expected,
                "pattern {pattern:?} on message {message:?}"
            );
        }
    }

    // Examples from AWS's "Filter pattern syntax for metric filters,
    // subscription filters, filter log events, and Live Tail" page.
    const UNSTRUCTURED: &[&str] = &[
        "[ERROR 400] BAD REQUEST",
        "[ERROR 401] UNAUTHORIZED REQUEST",
        "[ERROR 419] MISSING ARGUMENTS",
        "[ERROR 420] INVALID ARGUMENTS",
        "[INFO] Everything is fine",
    ];

    fn which(pattern: &str) -> Vec<usize> {
        let parsed = FilterPattern::parse(pattern).unwrap();
        UNSTRUCTURED
            .iter()
            .enumerate()
            .filter(|(_, m)| parsed.matches(m))
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn unstructured_terms_table() {
        let table: &[(&str, &[usize])] = &[
            ("", &[0, 1, 2, 3, 4]),
            ("\"\"", &[0, 1, 2, 3, 4]),
            ("ERROR", &[0, 1, 2, 3]),
            ("ERROR ARGUMENTS", &[2, 3]),
            ("?ERROR ?ARGUMENTS", &[0, 1, 2, 3]),
            ("?ARGUMENTS ?UNAUTHORIZED", &[1, 2, 3]),
            ("\"INVALID ARGUMENTS\"", &[3]),
            ("ERROR -ARGUMENTS", &[0, 1]),
            ("-ERROR", &[4]),
            ("error", &[]), // case-sensitive
            ("%ERROR 4[01]9%", &[2]),
            ("\"ERROR 4\" -MISSING", &[0, 1, 3]),
        ];
        for (pattern, expected) in table {
            assert_eq!(&which(pattern), expected, "pattern {pattern:?}");
        }
    }

    const CLOUDTRAIL: &str = r#"{
        "eventType": "UpdateTrail",
        "sourceIPAddress": "123.123.123.123",
        "arrayKey": ["value", "another value"],
        "objectList": [{"name": "a", "id": 1}, {"name": "b", "id": 2}],
        "SomeObject": null,
        "cluster.name": "c",
        "ThisFlag": true,
        "bandwidth": 75,
        "latency": 50,
        "refreshRate": 60,
        "responseCode": 403,
        "level": "error",
        "user": {"id": 1, "email": "John.Doe@example.com"},
        "users": [{"id": 2, "email": "John.Doe@example.com"}],
        "actions": ["GET", "PUT", "DELETE"],
        "a": {"b": ["x"]}
    }"#;

    #[test]
    fn json_table() {
        let table: &[(&str, bool)] = &[
            (r#"{ $.eventType = "UpdateTrail" }"#, true),
            (r#"{ $.eventType = UpdateTrail }"#, true),
            (r#"{ $.eventType = "Update*" }"#, true),
            (r#"{ $.eventType = "Create*" }"#, false),
            (r#"{ $.eventType != "UpdateTrail" }"#, false),
            ("{ $.sourceIPAddress != 123.123.* }", false),
            ("{ $.sourceIPAddress = 123.123.* }", true),
            (r#"{ $.arrayKey[0] = "value" }"#, true),
            (r#"{ $.arrayKey[1] = "value" }"#, false),
            ("{ $.objectList[1].id = 2 }", true),
            ("{ $.objectList[1].id = 1 }", false),
            ("{ $.SomeObject IS NULL }", true),
            ("{ $.SomeOtherObject NOT EXISTS }", true),
            ("{ $.SomeObject NOT EXISTS }", false),
            ("{ $.ThisFlag IS TRUE }", true),
            ("{ $.ThisFlag IS FALSE }", false),
            ("{ $.bandwidth > 75 }", false),
            ("{ $.bandwidth >= 75 }", true),
            ("{ $.latency < 50 }", false),
            ("{ $.latency <= 50 }", true),
            ("{ $.refreshRate = 60 }", true),
            ("{ $.refreshRate != 60 }", false),
            ("{ $.responseCode >= 400 }", true),
            ("{ $.latency > 100 }", false),
            (r#"{ $.level = "error" }"#, true),
            (r#"{ $.level = "ERROR" }"#, false),
            (
                r#"{ ($.user.id = 1) && ($.users[0].email = "John.Doe@example.com") }"#,
                true,
            ),
            (
                r#"{ ($.user.id = 2 && $.users[0].email = "nonmatch") || $.actions[2] = "GET" }"#,
                false,
            ),
            (
                r#"{ $.user.email = "John.Doe@example.com" || $.actions[2] = "GET" && $.user.id = 2 }"#,
                true,
            ),
            (
                r#"{ ($.user.id = 2 && $.users[0].email = "nonmatch") || $.actions[2] = "DELETE" }"#,
                true,
            ),
            ("{ $.a.b[0] = * }", true),
            ("{ $.a.b[1] = * }", false),
            ("{ $.SomeObject = * }", false),
            ("{ $.eventType = %Update.*% }", true),
        ];
        for (pattern, expected) in table {
            check(pattern, &[(CLOUDTRAIL, *expected)]);
        }
        // JSON patterns never match text that is not JSON.
        check("{ $.level = \"error\" }", &[("level=error", false)]);
    }

    #[test]
    fn space_delimited_table() {
        let log = r#"127.0.0.1 - frank [10/Oct/2000:13:25:15 -0700] "GET /apache_pb.gif HTTP/1.0" 404 1534"#;
        let table: &[(&str, bool)] = &[
            (
                "[ip, user, username, timestamp, request, status_code, bytes]",
                true,
            ),
            (
                "[ip, user, username, timestamp, request, status_code]",
                false,
            ),
            ("[ip, user, ..., status_code, bytes]", true),
            ("[ip, user, ..., status_code = 404, bytes]", true),
            ("[ip, user, ..., status_code = 4*, bytes]", true),
            ("[ip, user, ..., status_code = 5*, bytes]", false),
            ("[..., status_code != 200, bytes > 1000]", true),
            ("[..., status_code, bytes < 1000]", false),
            ("[ip = 127.0.0.1, ...]", true),
            ("[ip = %127\\.0\\.0\\.[1-9]%, ...]", true),
            (
                "[ip, user, username, timestamp, request = \"*apache_pb*\", status_code, bytes]",
                true,
            ),
            (
                "[ip, user, username, timestamp = \"10/Oct/2000*\", ...]",
                true,
            ),
            ("[..., status_code = 400 || status_code = 404, bytes]", true),
            (
                "[..., status_code >= 400 && status_code < 404, bytes]",
                false,
            ),
        ];
        for (pattern, expected) in table {
            check(pattern, &[(log, *expected)]);
        }
    }

    #[test]
    fn bad_patterns_are_rejected() {
        for pattern in [
            "{ $.a = }",
            "{ $.a > abc }",
            "{ level = 1 }",
            "{ $.a = 1 ",
            "{ ($.a = 1 }",
            "{ $.a IS MAYBE }",
            "{ $.a = 1 $.b = 2 }",
            "{ }",
            "\"unterminated",
            "%unterminated",
            "%(%",
            "?",
            "[a, b",
            "[]",
            "[a = ]",
            "[a = 1 &&]",
        ] {
            assert!(
                FilterPattern::parse(pattern).is_err(),
                "pattern {pattern:?} should be rejected"
            );
        }
    }

    #[test]
    fn glob() {
        assert!(glob_match("*", ""));
        assert!(glob_match("a*c", "abbbc"));
        assert!(glob_match("*Exception", "NullPointerException"));
        assert!(!glob_match("a*c", "abbb"));
        assert!(glob_match("a**", "a"));
        assert!(!glob_match("abc", "abcd"));
    }
}
