//! The Amazon ECS cluster query language, as `memberOf` constraints and
//! `ListContainerInstances --filter` use it.
//!
//! ```text
//! expression := or
//! or         := and (("or" | "||") and)*
//! and        := unary (("and" | "&&") unary)*
//! unary      := ("not" | "!") unary | "(" expression ")" | condition
//! condition  := subject operator [argument]
//! subject    := attribute:<name> | ec2InstanceId | agentConnected | agentVersion
//!             | registeredAt | runningTasksCount | task:group
//! operator   := == equals | != not_equals | > greater_than | >= greater_than_equal
//!             | < less_than | <= less_than_equal | exists | !exists not_exists
//!             | in | !in not_in | =~ matches | !~ not_matches
//! argument   := value | "[" value ("," value)* "]"
//! value      := bare word | 'quoted' | "quoted"
//! ```
//!
//! Keywords, operators and the fixed subjects are case-insensitive;
//! attribute names and values are not. `=~` takes a regular expression that
//! must match the whole value (`t2.*`). A bare value is a run of characters
//! other than white space and `()[],'"=!<>~&|`; anything else is quoted.
//!
//! Semantics: a comparison on an attribute the instance does not have is
//! false, the negative ones (`!=`, `not_in`, `!~`) included, so
//! `attribute:stack != prod` selects instances that have `stack` with
//! another value, as in ECS's documentation. An attribute registered without
//! a value compares as the empty string. `task:group` is the set of groups of
//! the instance's tasks: `task:group == web` holds when at least one task is
//! in `web`, and `!=`, `not_in` and `!~` are the negations of `==`, `in` and
//! `=~` (so `task:group != database` holds on an empty instance).

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use crate::InstanceSnapshot;

/// How deeply parentheses and `not` may nest.
const MAX_DEPTH: usize = 64;

/// A syntax error: the 0-based character position where it was found and
/// what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at character {position})")]
pub struct ParseError {
    pub position: usize,
    pub message: String,
}

fn error(position: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        position,
        message: message.into(),
    }
}

/// A parsed cluster query language expression. `Display` prints it in a
/// canonical form that parses back to the same expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expression {
    pub(crate) root: Node,
}

/// Parses a cluster query language expression.
pub fn parse_expression(input: &str) -> Result<Expression, ParseError> {
    let (tokens, end) = lex(input)?;
    let mut parser = Parser {
        tokens,
        next: 0,
        end,
    };
    let root = parser.or(0)?;
    if let Some(token) = parser.peek() {
        return Err(error(
            token.pos,
            format!(
                "expected 'and', 'or' or the end of the expression, found {}",
                token.tok
            ),
        ));
    }
    Ok(Expression { root })
}

impl FromStr for Expression {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_expression(s)
    }
}

impl Expression {
    /// Whether `instance` is in the group this expression selects, as it is
    /// now (its attributes, task groups and task count).
    pub fn matches(&self, instance: &InstanceSnapshot) -> bool {
        self.root.eval(instance)
    }

    /// Evaluates what cannot change while a batch whose tasks are in
    /// `batch_groups` is placed; `Unknown` when the answer depends on the
    /// instance's tasks, which placing the batch may change.
    pub(crate) fn settled(
        &self,
        instance: &InstanceSnapshot,
        batch_groups: &BTreeSet<&str>,
    ) -> Tri {
        self.root.settled(instance, batch_groups)
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.root.fmt_in(f, Context::Top)
    }
}

/// Three-valued logic (Kleene) for partial evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tri {
    True,
    False,
    Unknown,
}

impl Tri {
    fn of(b: bool) -> Tri {
        if b {
            Tri::True
        } else {
            Tri::False
        }
    }

    fn not(self) -> Tri {
        match self {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            Tri::Unknown => Tri::Unknown,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    /// Two or more operands, as written in one chain (`a and b and c`).
    And(Vec<Node>),
    Or(Vec<Node>),
    Not(Box<Node>),
    Cond(Cond),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cond {
    pub(crate) subject: Subject,
    pub(crate) op: Op,
    pub(crate) arg: Arg,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Subject {
    Attribute(String),
    Ec2InstanceId,
    AgentConnected,
    AgentVersion,
    RegisteredAt,
    RunningTasksCount,
    TaskGroup,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Exists,
    NotExists,
    In,
    NotIn,
    Matches,
    NotMatches,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Arg {
    None,
    Text(String),
    List(Vec<String>),
    Pattern(Pattern),
    Number(i64),
    Version(Vec<u64>),
    /// Seconds since the Unix epoch.
    Time(i64),
}

/// A regular expression that must match a whole value.
#[derive(Clone, Debug)]
pub(crate) struct Pattern {
    pub(crate) source: String,
    regex: regex::Regex,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl Pattern {
    pub(crate) fn new(source: &str) -> Result<Pattern, String> {
        let limit = 1 << 20;
        // Checking the pattern alone first keeps `a)|(b` from escaping the
        // anchoring group below.
        let check = regex::RegexBuilder::new(source)
            .size_limit(limit)
            .build()
            .map_err(regex_message)?;
        drop(check);
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(limit)
            .build()
            .map_err(regex_message)?;
        Ok(Pattern {
            source: source.to_string(),
            regex,
        })
    }

    fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

fn regex_message(e: regex::Error) -> String {
    let text = e.to_string();
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .trim_start_matches("error: ");
    format!("invalid regular expression: {last}")
}

// ---------------------------------------------------------------- lexing

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    AndAnd,
    OrOr,
    Bang,
    Op(Op),
    Word(String),
    Quoted(String),
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::LParen => f.write_str("'('"),
            Tok::RParen => f.write_str("')'"),
            Tok::LBracket => f.write_str("'['"),
            Tok::RBracket => f.write_str("']'"),
            Tok::Comma => f.write_str("','"),
            Tok::AndAnd => f.write_str("'&&'"),
            Tok::OrOr => f.write_str("'||'"),
            Tok::Bang => f.write_str("'!'"),
            Tok::Op(op) => write!(f, "'{op}'"),
            Tok::Word(w) | Tok::Quoted(w) => write!(f, "'{w}'"),
        }
    }
}

struct Token {
    tok: Tok,
    pos: usize,
}

/// Characters a bare (unquoted) word may contain.
pub(crate) fn is_bare(c: char) -> bool {
    !c.is_whitespace()
        && !matches!(
            c,
            '(' | ')' | '[' | ']' | ',' | '\'' | '"' | '=' | '!' | '<' | '>' | '~' | '&' | '|'
        )
}

fn lex(input: &str) -> Result<(Vec<Token>, usize), ParseError> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let next = chars.get(i + 1).copied();
        let (tok, len) = match c {
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            '[' => (Tok::LBracket, 1),
            ']' => (Tok::RBracket, 1),
            ',' => (Tok::Comma, 1),
            '=' => match next {
                Some('=') => (Tok::Op(Op::Eq), 2),
                Some('~') => (Tok::Op(Op::Matches), 2),
                _ => {
                    return Err(error(
                        i,
                        "unexpected '='; use '==' to compare or '=~' to match",
                    ))
                }
            },
            '!' => match next {
                Some('=') => (Tok::Op(Op::Ne), 2),
                Some('~') => (Tok::Op(Op::NotMatches), 2),
                _ => {
                    let mut j = i + 1;
                    while j < chars.len() && is_bare(chars[j]) {
                        j += 1;
                    }
                    let word: String = chars[i + 1..j].iter().collect();
                    if word.eq_ignore_ascii_case("in") {
                        (Tok::Op(Op::NotIn), j - i)
                    } else if word.eq_ignore_ascii_case("exists") {
                        (Tok::Op(Op::NotExists), j - i)
                    } else {
                        (Tok::Bang, 1)
                    }
                }
            },
            '<' if next == Some('=') => (Tok::Op(Op::Le), 2),
            '<' => (Tok::Op(Op::Lt), 1),
            '>' if next == Some('=') => (Tok::Op(Op::Ge), 2),
            '>' => (Tok::Op(Op::Gt), 1),
            '&' if next == Some('&') => (Tok::AndAnd, 2),
            '|' if next == Some('|') => (Tok::OrOr, 2),
            '&' | '|' => {
                return Err(error(
                    i,
                    format!(
                        "unexpected '{c}'; use '{c}{c}' or '{}'",
                        if c == '&' { "and" } else { "or" }
                    ),
                ))
            }
            '~' => return Err(error(i, "unexpected '~'; use '=~' or '!~'")),
            '\'' | '"' => {
                let close = chars[i + 1..].iter().position(|&d| d == c).ok_or_else(|| {
                    error(i, format!("unterminated quoted value: no closing {c}"))
                })?;
                let text: String = chars[i + 1..i + 1 + close].iter().collect();
                (Tok::Quoted(text), close + 2)
            }
            _ => {
                let mut j = i;
                while j < chars.len() && is_bare(chars[j]) {
                    j += 1;
                }
                (Tok::Word(chars[i..j].iter().collect()), j - i)
            }
        };
        tokens.push(Token { tok, pos: i });
        i += len;
    }
    Ok((tokens, chars.len()))
}

// --------------------------------------------------------------- parsing

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    /// Position of the end of the input, for "expected …" at the end.
    end: usize,
}

fn is_word(tok: &Tok, keyword: &str) -> bool {
    matches!(tok, Tok::Word(w) if w.eq_ignore_ascii_case(keyword))
}

fn word_operator(word: &str) -> Option<Op> {
    const WORDS: [(&str, Op); 12] = [
        ("equals", Op::Eq),
        ("not_equals", Op::Ne),
        ("greater_than", Op::Gt),
        ("greater_than_equal", Op::Ge),
        ("less_than", Op::Lt),
        ("less_than_equal", Op::Le),
        ("exists", Op::Exists),
        ("not_exists", Op::NotExists),
        ("in", Op::In),
        ("not_in", Op::NotIn),
        ("matches", Op::Matches),
        ("not_matches", Op::NotMatches),
    ];
    WORDS
        .iter()
        .find(|(w, _)| word.eq_ignore_ascii_case(w))
        .map(|(_, op)| *op)
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn pos(&self) -> usize {
        self.peek().map_or(self.end, |t| t.pos)
    }

    fn found(&self) -> String {
        match self.peek() {
            Some(t) => t.tok.to_string(),
            None => "the end of the expression".to_string(),
        }
    }

    fn or(&mut self, depth: usize) -> Result<Node, ParseError> {
        let mut items = vec![self.and(depth)?];
        while let Some(t) = self.peek() {
            if t.tok == Tok::OrOr || is_word(&t.tok, "or") {
                self.next += 1;
                items.push(self.and(depth)?);
            } else {
                break;
            }
        }
        Ok(match items.len() {
            1 => items.swap_remove(0),
            _ => Node::Or(items),
        })
    }

    fn and(&mut self, depth: usize) -> Result<Node, ParseError> {
        let mut items = vec![self.unary(depth)?];
        while let Some(t) = self.peek() {
            if t.tok == Tok::AndAnd || is_word(&t.tok, "and") {
                self.next += 1;
                items.push(self.unary(depth)?);
            } else {
                break;
            }
        }
        Ok(match items.len() {
            1 => items.swap_remove(0),
            _ => Node::And(items),
        })
    }

    fn unary(&mut self, depth: usize) -> Result<Node, ParseError> {
        if depth >= MAX_DEPTH {
            return Err(error(
                self.pos(),
                format!("the expression nests more than {MAX_DEPTH} levels deep"),
            ));
        }
        match self.peek() {
            Some(t) if t.tok == Tok::Bang || is_word(&t.tok, "not") => {
                self.next += 1;
                Ok(Node::Not(Box::new(self.unary(depth + 1)?)))
            }
            Some(t) if t.tok == Tok::LParen => {
                self.next += 1;
                let inner = self.or(depth + 1)?;
                match self.peek() {
                    Some(t) if t.tok == Tok::RParen => {
                        self.next += 1;
                        Ok(inner)
                    }
                    _ => Err(error(
                        self.pos(),
                        format!("expected ')', found {}", self.found()),
                    )),
                }
            }
            _ => Ok(Node::Cond(self.condition()?)),
        }
    }

    fn condition(&mut self) -> Result<Cond, ParseError> {
        const SUBJECTS: &str = "attribute:<name>, ec2InstanceId, agentConnected, agentVersion, registeredAt, runningTasksCount or task:group";
        let subject_pos = self.pos();
        let subject = match self.peek() {
            Some(Token {
                tok: Tok::Word(w), ..
            }) => parse_subject(w).map_err(|m| error(subject_pos, m))?,
            _ => {
                return Err(error(
                    subject_pos,
                    format!("expected a subject ({SUBJECTS}), found {}", self.found()),
                ))
            }
        };
        self.next += 1;
        let op_pos = self.pos();
        let op = match self.peek().map(|t| &t.tok) {
            Some(Tok::Op(op)) => Some(*op),
            Some(Tok::Word(w)) => word_operator(w),
            _ => None,
        }
        .ok_or_else(|| {
            error(
                op_pos,
                format!(
                    "expected an operator after '{subject}', found {}",
                    self.found()
                ),
            )
        })?;
        self.next += 1;
        if !subject.allows(op) {
            return Err(error(
                op_pos,
                format!("the operator '{op}' cannot be used with '{subject}'"),
            ));
        }
        let arg = match op {
            Op::Exists | Op::NotExists => Arg::None,
            Op::In | Op::NotIn => {
                if !matches!(self.peek(), Some(t) if t.tok == Tok::LBracket) {
                    return Err(error(
                        self.pos(),
                        format!(
                            "expected '[' to start the list after '{op}', found {}",
                            self.found()
                        ),
                    ));
                }
                self.next += 1;
                let mut values = Vec::new();
                loop {
                    let (value, pos) = self.value(op)?;
                    values.push(subject.text(&value).map_err(|m| error(pos, m))?);
                    match self.peek() {
                        Some(t) if t.tok == Tok::Comma => self.next += 1,
                        Some(t) if t.tok == Tok::RBracket => {
                            self.next += 1;
                            break;
                        }
                        _ => {
                            return Err(error(
                                self.pos(),
                                format!("expected ',' or ']', found {}", self.found()),
                            ))
                        }
                    }
                }
                Arg::List(values)
            }
            Op::Matches | Op::NotMatches => {
                let (value, pos) = self.value(op)?;
                Arg::Pattern(Pattern::new(&value).map_err(|m| error(pos, m))?)
            }
            _ => {
                let (value, pos) = self.value(op)?;
                subject.typed(&value).map_err(|m| error(pos, m))?
            }
        };
        Ok(Cond { subject, op, arg })
    }

    fn value(&mut self, op: Op) -> Result<(String, usize), ParseError> {
        match self.peek() {
            Some(Token {
                tok: Tok::Word(w) | Tok::Quoted(w),
                pos,
            }) => {
                let found = (w.clone(), *pos);
                self.next += 1;
                Ok(found)
            }
            _ => Err(error(
                self.pos(),
                format!("expected a value after '{op}', found {}", self.found()),
            )),
        }
    }
}

fn parse_subject(word: &str) -> Result<Subject, String> {
    let lower = word.to_ascii_lowercase();
    Ok(match lower.as_str() {
        "ec2instanceid" => Subject::Ec2InstanceId,
        "agentconnected" => Subject::AgentConnected,
        "agentversion" => Subject::AgentVersion,
        "registeredat" => Subject::RegisteredAt,
        "runningtaskscount" => Subject::RunningTasksCount,
        "task:group" => Subject::TaskGroup,
        _ if lower.starts_with("attribute:") => {
            let name = &word["attribute:".len()..];
            if name.is_empty() {
                return Err("expected an attribute name after 'attribute:'".to_string());
            }
            Subject::Attribute(name.to_string())
        }
        _ => {
            return Err(format!(
                "unknown subject '{word}'; expected attribute:<name>, ec2InstanceId, agentConnected, agentVersion, registeredAt, runningTasksCount or task:group"
            ))
        }
    })
}

impl Subject {
    /// The operators ECS documents for this subject.
    fn allows(&self, op: Op) -> bool {
        use Op::*;
        match self {
            Subject::Attribute(_) => true,
            Subject::TaskGroup => !matches!(op, Gt | Ge | Lt | Le),
            Subject::Ec2InstanceId | Subject::AgentConnected => {
                matches!(op, Eq | Ne | In | NotIn | Matches | NotMatches)
            }
            Subject::AgentVersion | Subject::RegisteredAt | Subject::RunningTasksCount => {
                matches!(op, Eq | Ne | Gt | Ge | Lt | Le)
            }
        }
    }

    /// A list element or text value, checked for this subject.
    fn text(&self, value: &str) -> Result<String, String> {
        match self {
            Subject::AgentConnected => parse_bool(value).map(|b| b.to_string()),
            _ => Ok(value.to_string()),
        }
    }

    /// The argument of a comparison (`==`, `!=`, `<` …).
    fn typed(&self, value: &str) -> Result<Arg, String> {
        match self {
            Subject::RunningTasksCount => value
                .parse::<i64>()
                .map(Arg::Number)
                .map_err(|_| format!("expected a whole number for runningTasksCount, found '{value}'")),
            Subject::AgentVersion => parse_version(value)
                .map(Arg::Version)
                .ok_or_else(|| format!("expected a version such as 1.14.5 for agentVersion, found '{value}'")),
            Subject::RegisteredAt => parse_time(value).map(Arg::Time).ok_or_else(|| {
                format!("expected a date such as 2018-06-18 or 2018-06-18T22:28:28Z for registeredAt, found '{value}'")
            }),
            _ => self.text(value).map(Arg::Text),
        }
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(format!(
            "expected true or false for agentConnected, found '{value}'"
        ))
    }
}

/// `1.14.5` → `[1, 14, 5]`.
fn parse_version(value: &str) -> Option<Vec<u64>> {
    value
        .split('.')
        .map(|part| {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                part.parse().ok()
            }
        })
        .collect()
}

/// The leading `digits(.digits)*` of an agent's version string.
fn instance_version(value: &str) -> Option<Vec<u64>> {
    let value = value.trim_start_matches(['v', 'V']);
    let end = value
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(value.len());
    parse_version(value[..end].trim_end_matches('.'))
}

fn cmp_versions(a: &[u64], b: &[u64]) -> Ordering {
    for k in 0..a.len().max(b.len()) {
        let x = a.get(k).copied().unwrap_or(0);
        let y = b.get(k).copied().unwrap_or(0);
        match x.cmp(&y) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    Ordering::Equal
}

/// ECS's `registeredAt` formats: `2018-06-18T22:28:28+00:00`,
/// `2018-06-18T22:28:28Z`, `2018-06-18T22:28:28`, `2018-06-18` (UTC unless
/// an offset is given), as seconds since the epoch.
fn parse_time(value: &str) -> Option<i64> {
    berth_util::time::parse_iso8601_secs(value)
}

fn format_time(secs: i64) -> String {
    berth_util::time::format_iso8601(secs)
}

/// Orders two attribute values: as numbers when both are numbers.
fn cmp_text(a: &str, b: &str) -> Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) if x.is_finite() && y.is_finite() => {
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        _ => a.cmp(b),
    }
}

fn ordered(op: Op, ord: Ordering) -> bool {
    match op {
        Op::Eq => ord == Ordering::Equal,
        Op::Ne => ord != Ordering::Equal,
        Op::Gt => ord == Ordering::Greater,
        Op::Ge => ord != Ordering::Less,
        Op::Lt => ord == Ordering::Less,
        Op::Le => ord != Ordering::Greater,
        _ => false,
    }
}

// ------------------------------------------------------------ evaluation

impl Node {
    fn eval(&self, instance: &InstanceSnapshot) -> bool {
        match self {
            Node::And(items) => items.iter().all(|n| n.eval(instance)),
            Node::Or(items) => items.iter().any(|n| n.eval(instance)),
            Node::Not(inner) => !inner.eval(instance),
            Node::Cond(c) => c.eval(instance),
        }
    }

    fn settled(&self, instance: &InstanceSnapshot, batch_groups: &BTreeSet<&str>) -> Tri {
        match self {
            Node::And(items) => {
                let mut out = Tri::True;
                for n in items {
                    match n.settled(instance, batch_groups) {
                        Tri::False => return Tri::False,
                        Tri::Unknown => out = Tri::Unknown,
                        Tri::True => {}
                    }
                }
                out
            }
            Node::Or(items) => {
                let mut out = Tri::False;
                for n in items {
                    match n.settled(instance, batch_groups) {
                        Tri::True => return Tri::True,
                        Tri::Unknown => out = Tri::Unknown,
                        Tri::False => {}
                    }
                }
                out
            }
            Node::Not(inner) => inner.settled(instance, batch_groups).not(),
            Node::Cond(c) => c.settled(instance, batch_groups),
        }
    }
}

impl Cond {
    /// For `task:group`: whether one group name passes the positive form
    /// of the test (`==`, `in`, `=~`, `exists`).
    fn group_test(&self, group: &str) -> bool {
        match (&self.op, &self.arg) {
            (Op::Eq | Op::Ne, Arg::Text(t)) => group == t,
            (Op::In | Op::NotIn, Arg::List(list)) => list.iter().any(|v| v == group),
            (Op::Matches | Op::NotMatches, Arg::Pattern(p)) => p.is_match(group),
            (Op::Exists | Op::NotExists, _) => true,
            _ => false,
        }
    }

    fn negative(&self) -> bool {
        matches!(self.op, Op::Ne | Op::NotIn | Op::NotMatches | Op::NotExists)
    }

    fn text_test(&self, value: &str) -> bool {
        match (&self.op, &self.arg) {
            (Op::In, Arg::List(list)) => list.iter().any(|v| v == value),
            (Op::NotIn, Arg::List(list)) => !list.iter().any(|v| v == value),
            (Op::Matches, Arg::Pattern(p)) => p.is_match(value),
            (Op::NotMatches, Arg::Pattern(p)) => !p.is_match(value),
            (op, Arg::Text(t)) => ordered(*op, cmp_text(value, t)),
            _ => false,
        }
    }

    fn eval(&self, instance: &InstanceSnapshot) -> bool {
        match &self.subject {
            Subject::Attribute(name) => match (self.op, instance.attributes.get(name)) {
                (Op::Exists, found) => found.is_some(),
                (Op::NotExists, found) => found.is_none(),
                (_, None) => false,
                (_, Some(value)) => self.text_test(value.as_deref().unwrap_or("")),
            },
            Subject::TaskGroup => {
                let any = instance
                    .groups
                    .iter()
                    .any(|(g, n)| *n > 0 && self.group_test(g));
                any != self.negative()
            }
            Subject::Ec2InstanceId => self.text_test(&instance.ec2_instance_id),
            Subject::AgentConnected => self.text_test(if instance.agent_connected {
                "true"
            } else {
                "false"
            }),
            Subject::AgentVersion => match (&instance.agent_version, &self.arg) {
                (Some(have), Arg::Version(want)) => instance_version(have)
                    .is_some_and(|have| ordered(self.op, cmp_versions(&have, want))),
                _ => false,
            },
            Subject::RegisteredAt => match (instance.registered_at, &self.arg) {
                (Some(at), Arg::Time(t)) => ordered(self.op, at.cmp(t)),
                _ => false,
            },
            Subject::RunningTasksCount => match &self.arg {
                Arg::Number(n) => ordered(self.op, i64::from(instance.task_count).cmp(n)),
                _ => false,
            },
        }
    }

    /// Tasks are only added while a batch is placed, so a `task:group` test
    /// that holds stays true, and one that fails can only flip when a group
    /// of the batch passes it. `runningTasksCount` changes with every task.
    fn settled(&self, instance: &InstanceSnapshot, batch_groups: &BTreeSet<&str>) -> Tri {
        match &self.subject {
            Subject::TaskGroup => {
                let now = instance
                    .groups
                    .iter()
                    .any(|(g, n)| *n > 0 && self.group_test(g));
                let positive = if now {
                    Tri::True
                } else if batch_groups.iter().any(|g| self.group_test(g)) {
                    Tri::Unknown
                } else {
                    Tri::False
                };
                if self.negative() {
                    positive.not()
                } else {
                    positive
                }
            }
            Subject::RunningTasksCount => Tri::Unknown,
            _ => Tri::of(self.eval(instance)),
        }
    }
}

// -------------------------------------------------------------- printing

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Exists => "exists",
            Op::NotExists => "!exists",
            Op::In => "in",
            Op::NotIn => "not_in",
            Op::Matches => "=~",
            Op::NotMatches => "!~",
        })
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Attribute(name) => write!(f, "attribute:{name}"),
            Subject::Ec2InstanceId => f.write_str("ec2InstanceId"),
            Subject::AgentConnected => f.write_str("agentConnected"),
            Subject::AgentVersion => f.write_str("agentVersion"),
            Subject::RegisteredAt => f.write_str("registeredAt"),
            Subject::RunningTasksCount => f.write_str("runningTasksCount"),
            Subject::TaskGroup => f.write_str("task:group"),
        }
    }
}

/// A value as it parses back: bare when it can be, else quoted.
pub(crate) fn fmt_value(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    if !value.is_empty() && value.chars().all(is_bare) {
        f.write_str(value)
    } else if !value.contains('\'') {
        write!(f, "'{value}'")
    } else {
        write!(f, "\"{value}\"")
    }
}

impl fmt::Display for Arg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arg::None => Ok(()),
            Arg::Text(t) => fmt_value(f, t),
            Arg::Pattern(p) => fmt_value(f, &p.source),
            Arg::List(list) => {
                f.write_str("[")?;
                for (k, v) in list.iter().enumerate() {
                    if k > 0 {
                        f.write_str(", ")?;
                    }
                    fmt_value(f, v)?;
                }
                f.write_str("]")
            }
            Arg::Number(n) => write!(f, "{n}"),
            Arg::Version(v) => {
                for (k, part) in v.iter().enumerate() {
                    if k > 0 {
                        f.write_str(".")?;
                    }
                    write!(f, "{part}")?;
                }
                Ok(())
            }
            Arg::Time(t) => f.write_str(&format_time(*t)),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    Top,
    InAnd,
    InOr,
}

impl Node {
    fn fmt_in(&self, f: &mut fmt::Formatter<'_>, ctx: Context) -> fmt::Result {
        match self {
            Node::Cond(c) => {
                write!(f, "{} {}", c.subject, c.op)?;
                if c.arg != Arg::None {
                    write!(f, " {}", c.arg)?;
                }
                Ok(())
            }
            Node::Not(inner) => {
                f.write_str("not (")?;
                inner.fmt_in(f, Context::Top)?;
                f.write_str(")")
            }
            Node::And(items) | Node::Or(items) => {
                let is_and = matches!(self, Node::And(_));
                // A chain inside a chain of the same kind, or an `or` inside
                // an `and`, keeps its parentheses.
                let paren = match ctx {
                    Context::Top => false,
                    Context::InAnd => true,
                    Context::InOr => !is_and,
                };
                if paren {
                    f.write_str("(")?;
                }
                let (sep, inner) = if is_and {
                    (" and ", Context::InAnd)
                } else {
                    (" or ", Context::InOr)
                };
                for (k, item) in items.iter().enumerate() {
                    if k > 0 {
                        f.write_str(sep)?;
                    }
                    item.fmt_in(f, inner)?;
                }
                if paren {
                    f.write_str(")")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
