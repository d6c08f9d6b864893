//! CloudWatch Logs Insights: the query language, parsed once, and its
//! evaluation over a stream of records.
//!
//! Supported commands: `fields`, `display`, `filter`, `stats` (`count`,
//! `count_distinct`, `sum`, `avg`, `min`, `max`, `earliest`, `latest`,
//! `pct`, `stddev` … `by` fields and `bin(period)`), `sort … asc|desc`,
//! `limit`, `parse` (glob with `*` and regular expressions with named
//! groups) and `dedup`. Expressions have arithmetic, comparisons, `and`,
//! `or`, `not`, `like "text"`, `like /regex/`, `=~ /regex/`, `in [...]` and
//! the common scalar functions. JSON events have their fields discovered
//! (`a.b.c`, arrays as `a.0`), as Logs Insights does.
//!
//! [`Execution`] runs a query: records are pushed one at a time through the
//! commands before the first `stats` or `sort` (so `limit` can stop a scan
//! early), the rest runs over the collected rows. Everything it holds is
//! bounded: sorted rows are kept as a top-k when a limit follows, and
//! [`MAX_ROWS`] caps any other collection.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use regex::Regex;

/// The most rows one stage of a query may collect (sort without a limit,
/// stats groups); a query needing more fails with a clear message.
pub const MAX_ROWS: usize = 1_000_000;
/// Distinct values `count_distinct` keeps exactly per group.
const MAX_DISTINCT: usize = 100_000;
/// Values `pct` keeps per group.
const MAX_PCT_VALUES: usize = 1_000_000;

/// A query that does not compile: AWS's `MalformedQueryException`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub message: String,
    /// Character offsets of the offending text.
    pub start: usize,
    pub end: usize,
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A query that failed while running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunError(pub String);

// ------------------------------------------------------------------ values ---

/// A field's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Num(f64),
    Str(String),
    /// Milliseconds since the epoch: `@timestamp`, `bin()` results.
    Time(i64),
    Bool(bool),
}

/// How Logs Insights prints a timestamp: `2024-05-01 12:34:56.789`, the
/// milliseconds always written (`… 12:34:00.000` for a whole `bin()`).
pub fn format_timestamp(ms: i64) -> String {
    let iso = berth_util::time::format_iso8601(ms.div_euclid(1000));
    format!(
        "{}.{:03}",
        iso.trim_end_matches('Z').replacen('T', " ", 1),
        ms.rem_euclid(1000)
    )
}

fn format_number(n: f64) -> String {
    if n.is_finite() && n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

impl Value {
    fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The value as a number, when it is one (or reads as one).
    fn as_num(&self) -> Option<f64> {
        match self {
            Value::Num(n) => Some(*n),
            Value::Time(t) => Some(*t as f64),
            Value::Str(s) => s.trim().parse::<f64>().ok().filter(|n| n.is_finite()),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::Null => None,
        }
    }

    /// The value as results show it.
    pub fn render(&self) -> Cow<'_, str> {
        match self {
            Value::Null => Cow::Borrowed(""),
            Value::Str(s) => Cow::Borrowed(s),
            Value::Num(n) => Cow::Owned(format_number(*n)),
            Value::Time(t) => Cow::Owned(format_timestamp(*t)),
            Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        }
    }

    fn truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Num(n) => *n != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Time(_) => true,
        }
    }
}

/// Orders two values: numerically when both are numbers, else as text.
fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (a.as_num(), b.as_num()) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => a.render().cmp(&b.render()),
    }
}

// ----------------------------------------------------------------- records ---

/// The log group and stream an event belongs to.
#[derive(Debug)]
pub struct Origin {
    /// `@log`: `<account>:<group name>`.
    pub log: String,
    /// `@logStream`.
    pub stream: String,
    /// Where `@ptr` points: an opaque pointer prefix for this stream.
    pub pointer_prefix: String,
}

/// One log event as a query sees it.
#[derive(Debug)]
pub struct Event {
    pub timestamp: i64,
    pub ingestion_time: i64,
    pub message: String,
    pub origin: Arc<Origin>,
    /// The event's key in the store, for `@ptr`.
    pub seq: i64,
}

/// A row flowing through the commands: an event with the fields commands
/// added, or (after `stats`) just fields.
#[derive(Debug)]
pub struct Record {
    event: Option<Event>,
    fields: Vec<(String, Value)>,
    json: OnceLock<Option<HashMap<String, Value>>>,
}

impl Record {
    pub fn from_event(event: Event) -> Record {
        Record {
            event: Some(event),
            fields: Vec::new(),
            json: OnceLock::new(),
        }
    }

    fn from_fields(fields: Vec<(String, Value)>) -> Record {
        Record {
            event: None,
            fields,
            json: OnceLock::new(),
        }
    }

    fn set(&mut self, name: &str, value: Value) {
        match self.fields.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((name.to_string(), value)),
        }
    }

    /// The event's pointer (`@ptr`), for event rows.
    pub fn pointer(&self) -> Option<String> {
        self.event
            .as_ref()
            .map(|e| format!("{}{}:{}", e.origin.pointer_prefix, e.timestamp, e.seq))
    }

    pub fn get(&self, name: &str) -> Value {
        if let Some((_, v)) = self.fields.iter().find(|(n, _)| n == name) {
            return v.clone();
        }
        let Some(event) = &self.event else {
            return Value::Null;
        };
        match name {
            "@timestamp" => Value::Time(event.timestamp),
            "@message" => Value::Str(event.message.clone()),
            "@logStream" => Value::Str(event.origin.stream.clone()),
            "@log" => Value::Str(event.origin.log.clone()),
            "@ingestionTime" => Value::Time(event.ingestion_time),
            "@ptr" => self.pointer().map_or(Value::Null, Value::Str),
            _ => self
                .json_fields()
                .and_then(|fields| fields.get(name).cloned())
                .unwrap_or(Value::Null),
        }
    }

    /// The fields discovered in a JSON message, flattened (`a.b`, `a.0`).
    pub fn json_fields(&self) -> Option<&HashMap<String, Value>> {
        self.json
            .get_or_init(|| {
                let message = &self.event.as_ref()?.message;
                if !message.trim_start().starts_with('{') {
                    return None;
                }
                let doc: serde_json::Value = serde_json::from_str(message).ok()?;
                let mut out = HashMap::new();
                flatten("", &doc, &mut out);
                Some(out)
            })
            .as_ref()
    }
}

fn flatten(prefix: &str, value: &serde_json::Value, out: &mut HashMap<String, Value>) {
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        }
    };
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                flatten(&join(k), v, out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&join(&i.to_string()), v, out);
            }
        }
        serde_json::Value::String(s) => {
            out.insert(prefix.to_string(), Value::Str(s.clone()));
        }
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.insert(prefix.to_string(), Value::Num(f));
            }
        }
        serde_json::Value::Bool(b) => {
            out.insert(prefix.to_string(), Value::Bool(*b));
        }
        serde_json::Value::Null => {}
    }
}

// ------------------------------------------------------------------- lexer ---

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    /// A period such as `5m`, in milliseconds, with its text.
    Duration(i64, String),
    Op(&'static str),
    Pipe,
    Comma,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Star,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => s.clone(),
            Tok::Str(s) => format!("\"{s}\""),
            Tok::Num(n) => format_number(*n),
            Tok::Duration(_, text) => text.clone(),
            Tok::Op(op) => (*op).to_string(),
            Tok::Pipe => "|".into(),
            Tok::Comma => ",".into(),
            Tok::LParen => "(".into(),
            Tok::RParen => ")".into(),
            Tok::LBracket => "[".into(),
            Tok::RBracket => "]".into(),
            Tok::Star => "*".into(),
            Tok::Eof => "end of query".into(),
        }
    }
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    peeked: Option<(Tok, usize, usize)>,
}

fn duration_ms(amount: f64, unit: &str) -> Option<i64> {
    let ms = match unit {
        "ms" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000.0,
        "d" | "day" | "days" => 86_400_000.0,
        "w" | "week" | "weeks" => 604_800_000.0,
        _ => return None,
    };
    let total = amount * ms;
    (1.0..1e15).contains(&total).then_some(total as i64)
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '@' | '$')
}

impl Lexer {
    fn new(text: &str) -> Self {
        Lexer {
            chars: text.chars().collect(),
            pos: 0,
            peeked: None,
        }
    }

    fn error(&self, message: impl Into<String>, start: usize, end: usize) -> CompileError {
        CompileError {
            message: message.into(),
            start,
            end,
        }
    }

    /// AWS's wording for a token that does not fit.
    fn unexpected(&self, tok: &Tok, start: usize, end: usize) -> CompileError {
        let (line, column) = self.line_and_column(start);
        self.error(
            format!(
                "unexpected symbol found {} at line {line} and position {column}",
                tok.describe()
            ),
            start,
            end,
        )
    }

    fn line_and_column(&self, at: usize) -> (usize, usize) {
        let mut line = 1;
        let mut column = 1;
        for c in self.chars.iter().take(at) {
            if *c == '\n' {
                line += 1;
                column = 1;
            } else {
                column += 1;
            }
        }
        (line, column)
    }

    fn skip_space(&mut self) {
        while self.pos < self.chars.len() {
            let c = self.chars[self.pos];
            if c.is_whitespace() {
                self.pos += 1;
            } else if c == '#' {
                while self.pos < self.chars.len() && self.chars[self.pos] != '\n' {
                    self.pos += 1;
                }
            } else {
                break;
            }
        }
    }

    fn peek(&mut self) -> Result<&(Tok, usize, usize), CompileError> {
        if self.peeked.is_none() {
            let next = self.lex()?;
            self.peeked = Some(next);
        }
        match &self.peeked {
            Some(p) => Ok(p),
            None => Err(self.error("internal lexer error", self.pos, self.pos)),
        }
    }

    fn next(&mut self) -> Result<(Tok, usize, usize), CompileError> {
        match self.peeked.take() {
            Some(p) => Ok(p),
            None => self.lex(),
        }
    }

    /// The source text between two character offsets.
    fn slice(&self, start: usize, end: usize) -> String {
        self.chars[start..end.min(self.chars.len())]
            .iter()
            .collect::<String>()
            .trim()
            .to_string()
    }

    /// Reads `/regex/` at the current position (a regex is only read where
    /// one is allowed, so `/` is otherwise division).
    fn regex(&mut self) -> Result<Option<(Regex, usize, usize)>, CompileError> {
        if let Some((_, start, _)) = &self.peeked {
            self.pos = *start;
            self.peeked = None;
        }
        self.skip_space();
        if self.chars.get(self.pos) != Some(&'/') {
            return Ok(None);
        }
        let start = self.pos;
        let mut i = self.pos + 1;
        let mut body = String::new();
        while i < self.chars.len() && self.chars[i] != '/' {
            if self.chars[i] == '\\' && self.chars.get(i + 1) == Some(&'/') {
                body.push('/');
                i += 2;
                continue;
            }
            body.push(self.chars[i]);
            i += 1;
        }
        if i >= self.chars.len() {
            return Err(self.error("unterminated regular expression", start, i));
        }
        i += 1;
        // Optional flags after the closing slash, such as `/abc/i`.
        let mut flags = String::new();
        while i < self.chars.len() && self.chars[i].is_ascii_alphabetic() {
            flags.push(self.chars[i]);
            i += 1;
        }
        let pattern = if flags.is_empty() {
            body
        } else if flags.chars().all(|f| matches!(f, 'i' | 'm' | 's')) {
            format!("(?{flags}){body}")
        } else {
            return Err(self.error(
                format!("unsupported regular expression flags '{flags}'"),
                start,
                i,
            ));
        };
        let regex = regex::RegexBuilder::new(&pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| self.error(format!("invalid regular expression: {e}"), start, i))?;
        self.pos = i;
        Ok(Some((regex, start, i)))
    }

    fn lex(&mut self) -> Result<(Tok, usize, usize), CompileError> {
        self.skip_space();
        let start = self.pos;
        let Some(&c) = self.chars.get(self.pos) else {
            return Ok((Tok::Eof, start, start));
        };
        let single = |tok: Tok, lexer: &mut Self| {
            lexer.pos += 1;
            Ok((tok, start, start + 1))
        };
        match c {
            '|' => single(Tok::Pipe, self),
            ',' => single(Tok::Comma, self),
            '(' => single(Tok::LParen, self),
            ')' => single(Tok::RParen, self),
            '[' => single(Tok::LBracket, self),
            ']' => single(Tok::RBracket, self),
            '*' => single(Tok::Star, self),
            '+' => single(Tok::Op("+"), self),
            '-' => single(Tok::Op("-"), self),
            '/' => single(Tok::Op("/"), self),
            '%' => single(Tok::Op("%"), self),
            '=' | '!' | '<' | '>' => {
                let next = self.chars.get(self.pos + 1).copied();
                let (op, len) = match (c, next) {
                    ('=', Some('=')) => ("=", 2),
                    ('=', Some('~')) => ("=~", 2),
                    ('=', _) => ("=", 1),
                    ('!', Some('=')) => ("!=", 2),
                    ('<', Some('=')) => ("<=", 2),
                    ('<', _) => ("<", 1),
                    ('>', Some('=')) => (">=", 2),
                    ('>', _) => (">", 1),
                    _ => return Err(self.unexpected(&Tok::Ident(c.to_string()), start, start + 1)),
                };
                self.pos += len;
                Ok((Tok::Op(op), start, self.pos))
            }
            '"' | '\'' => {
                let quote = c;
                let mut i = self.pos + 1;
                let mut out = String::new();
                while i < self.chars.len() && self.chars[i] != quote {
                    if self.chars[i] == '\\' && i + 1 < self.chars.len() {
                        let escaped = self.chars[i + 1];
                        out.push(match escaped {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                        i += 2;
                        continue;
                    }
                    out.push(self.chars[i]);
                    i += 1;
                }
                if i >= self.chars.len() {
                    return Err(self.error("unterminated string", start, i));
                }
                self.pos = i + 1;
                Ok((Tok::Str(out), start, self.pos))
            }
            '`' => {
                let mut i = self.pos + 1;
                let mut out = String::new();
                while i < self.chars.len() && self.chars[i] != '`' {
                    out.push(self.chars[i]);
                    i += 1;
                }
                if i >= self.chars.len() || out.is_empty() {
                    return Err(self.error("unterminated `field name`", start, i));
                }
                self.pos = i + 1;
                Ok((Tok::Ident(out), start, self.pos))
            }
            c if c.is_ascii_digit() => {
                let mut i = self.pos;
                while i < self.chars.len()
                    && (self.chars[i].is_ascii_digit() || self.chars[i] == '.')
                {
                    i += 1;
                }
                let number: String = self.chars[self.pos..i].iter().collect();
                let value = number
                    .parse::<f64>()
                    .map_err(|_| self.error(format!("invalid number {number}"), start, i))?;
                let mut j = i;
                while j < self.chars.len() && self.chars[j].is_ascii_alphabetic() {
                    j += 1;
                }
                if j > i {
                    let unit: String = self.chars[i..j].iter().collect();
                    let text: String = self.chars[start..j].iter().collect();
                    let ms = duration_ms(value, &unit).ok_or_else(|| {
                        self.error(format!("invalid time period {text}"), start, j)
                    })?;
                    self.pos = j;
                    return Ok((Tok::Duration(ms, text), start, j));
                }
                self.pos = i;
                Ok((Tok::Num(value), start, i))
            }
            c if ident_char(c) => {
                let mut i = self.pos;
                while i < self.chars.len() && ident_char(self.chars[i]) {
                    i += 1;
                }
                let word: String = self.chars[self.pos..i].iter().collect();
                self.pos = i;
                Ok((Tok::Ident(word), start, i))
            }
            other => {
                self.pos += 1;
                Err(self.unexpected(&Tok::Ident(other.to_string()), start, start + 1))
            }
        }
    }
}

fn is_keyword(tok: &Tok, word: &str) -> bool {
    matches!(tok, Tok::Ident(w) if w.eq_ignore_ascii_case(word))
}

// ------------------------------------------------------------ expressions ---

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
}

#[derive(Debug, Clone)]
enum Pattern {
    Text(String),
    Regex(Regex),
}

impl Pattern {
    fn matches(&self, text: &str) -> bool {
        match self {
            Pattern::Text(needle) => text.contains(needle.as_str()),
            Pattern::Regex(re) => re.is_match(text),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Abs,
    Ceil,
    Floor,
    Round,
    Sqrt,
    Log,
    Strlen,
    ToUpper,
    ToLower,
    Trim,
    Ltrim,
    Rtrim,
    Concat,
    Substr,
    Replace,
    StrContains,
    IsEmpty,
    IsBlank,
    IsPresent,
    Coalesce,
    Bin,
    DateFloor,
    DateCeil,
    FromMillis,
    ToMillis,
    Greatest,
    Least,
}

impl Func {
    fn named(name: &str) -> Option<(Func, usize, usize)> {
        // (function, least arguments, most arguments)
        Some(match name.to_ascii_lowercase().as_str() {
            "abs" => (Func::Abs, 1, 1),
            "ceil" => (Func::Ceil, 1, 1),
            "floor" => (Func::Floor, 1, 1),
            "round" => (Func::Round, 1, 1),
            "sqrt" => (Func::Sqrt, 1, 1),
            "log" => (Func::Log, 1, 1),
            "strlen" => (Func::Strlen, 1, 1),
            "toupper" => (Func::ToUpper, 1, 1),
            "tolower" => (Func::ToLower, 1, 1),
            "trim" => (Func::Trim, 1, 1),
            "ltrim" => (Func::Ltrim, 1, 1),
            "rtrim" => (Func::Rtrim, 1, 1),
            "concat" => (Func::Concat, 1, 64),
            "substr" => (Func::Substr, 2, 3),
            "replace" => (Func::Replace, 3, 3),
            "strcontains" => (Func::StrContains, 2, 2),
            "isempty" => (Func::IsEmpty, 1, 1),
            "isblank" => (Func::IsBlank, 1, 1),
            "ispresent" => (Func::IsPresent, 1, 1),
            "coalesce" => (Func::Coalesce, 1, 64),
            "bin" => (Func::Bin, 1, 1),
            "datefloor" => (Func::DateFloor, 2, 2),
            "dateceil" => (Func::DateCeil, 2, 2),
            "frommillis" => (Func::FromMillis, 1, 1),
            "tomillis" => (Func::ToMillis, 1, 1),
            "greatest" => (Func::Greatest, 1, 64),
            "least" => (Func::Least, 1, 64),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone)]
enum Expr {
    Field(String),
    Lit(Value),
    /// A time period literal (`5m`), in milliseconds.
    Period(i64),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    Like(Box<Expr>, Pattern, bool),
    In(Box<Expr>, Vec<Expr>, bool),
    Call(Func, Vec<Expr>),
}

fn number_of(value: &Value) -> Option<f64> {
    value.as_num()
}

impl Expr {
    fn eval(&self, record: &Record) -> Value {
        match self {
            Expr::Field(name) => record.get(name),
            Expr::Lit(v) => v.clone(),
            Expr::Period(ms) => Value::Num(*ms as f64),
            Expr::Neg(e) => number_of(&e.eval(record)).map_or(Value::Null, |n| Value::Num(-n)),
            Expr::Not(e) => Value::Bool(!e.eval(record).truthy()),
            Expr::Bin(op, a, b) => {
                match op {
                    BinOp::And => {
                        return Value::Bool(a.eval(record).truthy() && b.eval(record).truthy())
                    }
                    BinOp::Or => {
                        return Value::Bool(a.eval(record).truthy() || b.eval(record).truthy())
                    }
                    _ => {}
                }
                let (x, y) = (a.eval(record), b.eval(record));
                binary(*op, &x, &y)
            }
            Expr::Like(e, pattern, negated) => {
                let v = e.eval(record);
                if v.is_null() {
                    return Value::Bool(false);
                }
                Value::Bool(pattern.matches(&v.render()) != *negated)
            }
            Expr::In(e, items, negated) => {
                let v = e.eval(record);
                if v.is_null() {
                    return Value::Bool(false);
                }
                let found = items
                    .iter()
                    .any(|i| compare_values(&v, &i.eval(record)) == Ordering::Equal);
                Value::Bool(found != *negated)
            }
            Expr::Call(func, args) => call(*func, args, record),
        }
    }
}

fn binary(op: BinOp, x: &Value, y: &Value) -> Value {
    if x.is_null() || y.is_null() {
        return match op {
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                Value::Bool(false)
            }
            _ => Value::Null,
        };
    }
    let arithmetic = |f: fn(f64, f64) -> f64| match (x.as_num(), y.as_num()) {
        (Some(a), Some(b)) => {
            let r = f(a, b);
            if r.is_finite() {
                Value::Num(r)
            } else {
                Value::Null
            }
        }
        _ => Value::Null,
    };
    let ordering = || compare_values(x, y);
    match op {
        BinOp::Add => arithmetic(|a, b| a + b),
        BinOp::Sub => arithmetic(|a, b| a - b),
        BinOp::Mul => arithmetic(|a, b| a * b),
        BinOp::Div => arithmetic(|a, b| a / b),
        BinOp::Mod => arithmetic(|a, b| a % b),
        BinOp::Eq => Value::Bool(ordering() == Ordering::Equal),
        BinOp::Ne => Value::Bool(ordering() != Ordering::Equal),
        BinOp::Lt => Value::Bool(ordering() == Ordering::Less),
        BinOp::Le => Value::Bool(ordering() != Ordering::Greater),
        BinOp::Gt => Value::Bool(ordering() == Ordering::Greater),
        BinOp::Ge => Value::Bool(ordering() != Ordering::Less),
        BinOp::And | BinOp::Or => Value::Null,
    }
}

fn floor_to(ms: i64, period: i64) -> i64 {
    if period <= 0 {
        ms
    } else {
        ms.div_euclid(period) * period
    }
}

fn call(func: Func, args: &[Expr], record: &Record) -> Value {
    let arg = |i: usize| args.get(i).map_or(Value::Null, |a| a.eval(record));
    let num = |i: usize| arg(i).as_num();
    let text = |i: usize| {
        let v = arg(i);
        (!v.is_null()).then(|| v.render().into_owned())
    };
    let math = |f: fn(f64) -> f64| {
        num(0)
            .map(f)
            .filter(|r| r.is_finite())
            .map_or(Value::Null, Value::Num)
    };
    let string = |f: &dyn Fn(&str) -> String| text(0).map_or(Value::Null, |s| Value::Str(f(&s)));
    match func {
        Func::Abs => math(f64::abs),
        Func::Ceil => math(f64::ceil),
        Func::Floor => math(f64::floor),
        Func::Round => math(f64::round),
        Func::Sqrt => math(f64::sqrt),
        Func::Log => math(f64::ln),
        Func::Strlen => text(0).map_or(Value::Null, |s| Value::Num(s.chars().count() as f64)),
        Func::ToUpper => string(&|s| s.to_uppercase()),
        Func::ToLower => string(&|s| s.to_lowercase()),
        Func::Trim => string(&|s| s.trim().to_string()),
        Func::Ltrim => string(&|s| s.trim_start().to_string()),
        Func::Rtrim => string(&|s| s.trim_end().to_string()),
        Func::Concat => Value::Str(
            (0..args.len())
                .filter_map(text)
                .collect::<Vec<_>>()
                .concat(),
        ),
        Func::Substr => {
            let Some(s) = text(0) else {
                return Value::Null;
            };
            let start = num(1).unwrap_or(0.0).max(0.0) as usize;
            let chars = s.chars().skip(start);
            Value::Str(match num(2) {
                Some(len) => chars.take(len.max(0.0) as usize).collect(),
                None => chars.collect(),
            })
        }
        Func::Replace => match (text(0), text(1), text(2)) {
            (Some(s), Some(from), Some(to)) if !from.is_empty() => {
                Value::Str(s.replace(&from, &to))
            }
            (Some(s), _, _) => Value::Str(s),
            _ => Value::Null,
        },
        Func::StrContains => match (text(0), text(1)) {
            (Some(s), Some(sub)) => Value::Num(if s.contains(&sub) { 1.0 } else { 0.0 }),
            _ => Value::Num(0.0),
        },
        Func::IsEmpty => Value::Bool(text(0).is_none_or(|s| s.is_empty())),
        Func::IsBlank => Value::Bool(text(0).is_none_or(|s| s.trim().is_empty())),
        Func::IsPresent => Value::Bool(!arg(0).is_null()),
        Func::Coalesce => (0..args.len())
            .map(arg)
            .find(|v| !v.is_null())
            .unwrap_or(Value::Null),
        Func::Bin => {
            let period = num(0).unwrap_or(0.0) as i64;
            match record.get("@timestamp") {
                Value::Time(ts) => Value::Time(floor_to(ts, period)),
                _ => Value::Null,
            }
        }
        Func::DateFloor | Func::DateCeil => {
            let Some(ts) = num(0) else {
                return Value::Null;
            };
            let period = num(1).unwrap_or(0.0) as i64;
            let floor = floor_to(ts as i64, period);
            if func == Func::DateCeil && floor != ts as i64 {
                Value::Time(floor + period)
            } else {
                Value::Time(floor)
            }
        }
        Func::FromMillis => num(0).map_or(Value::Null, |n| Value::Time(n as i64)),
        Func::ToMillis => num(0).map_or(Value::Null, Value::Num),
        Func::Greatest | Func::Least => {
            let mut best: Option<Value> = None;
            for v in (0..args.len()).map(arg).filter(|v| !v.is_null()) {
                best = Some(match best {
                    None => v,
                    Some(b) => {
                        let order = compare_values(&v, &b);
                        let take = if func == Func::Greatest {
                            order == Ordering::Greater
                        } else {
                            order == Ordering::Less
                        };
                        if take {
                            v
                        } else {
                            b
                        }
                    }
                });
            }
            best.unwrap_or(Value::Null)
        }
    }
}

// --------------------------------------------------------------- commands ---

/// An expression with the column name results show for it.
#[derive(Debug, Clone)]
struct Named {
    expr: Expr,
    name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AggFunc {
    Count,
    CountDistinct,
    Sum,
    Avg,
    Min,
    Max,
    Earliest,
    Latest,
    Pct,
    Stddev,
}

#[derive(Debug, Clone)]
struct Aggregate {
    func: AggFunc,
    /// `None` for `count(*)`.
    arg: Option<Expr>,
    /// `pct`'s percentile.
    percentile: f64,
    name: String,
}

#[derive(Debug, Clone)]
enum ParseHow {
    /// A glob's regex and the names its `*`s bind.
    Glob(Regex, Vec<String>),
    /// A regex with named groups.
    Regex(Regex, Vec<String>),
}

#[derive(Debug, Clone)]
enum Command {
    Fields(Vec<Named>),
    Display(Vec<String>),
    Filter(Expr),
    Stats {
        aggregates: Vec<Aggregate>,
        by: Vec<Named>,
    },
    Sort(Vec<(Expr, bool)>),
    Limit(usize),
    Parse {
        source: Expr,
        how: ParseHow,
    },
    Dedup(Vec<String>),
}

impl Command {
    fn blocking(&self) -> bool {
        matches!(self, Command::Stats { .. } | Command::Sort(_))
    }
}

/// A compiled query.
#[derive(Debug, Clone)]
pub struct Query {
    commands: Vec<Command>,
    /// The columns results show, in order.
    columns: Vec<String>,
    /// Whether result rows are events (and so carry `@ptr`).
    event_rows: bool,
}

/// Columns shown when a query names none.
const DEFAULT_COLUMNS: &[&str] = &["@timestamp", "@message", "@logStream", "@log"];

struct Parser {
    lex: Lexer,
}

impl Parser {
    fn expect(&mut self, want: &Tok) -> Result<(), CompileError> {
        let (tok, start, end) = self.lex.next()?;
        if &tok == want {
            Ok(())
        } else {
            Err(self.lex.unexpected(&tok, start, end))
        }
    }

    fn at_keyword(&mut self, word: &str) -> Result<bool, CompileError> {
        Ok(is_keyword(&self.lex.peek()?.0, word))
    }

    fn eat_keyword(&mut self, word: &str) -> Result<bool, CompileError> {
        if self.at_keyword(word)? {
            self.lex.next()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn eat(&mut self, want: &Tok) -> Result<bool, CompileError> {
        if &self.lex.peek()?.0 == want {
            self.lex.next()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    fn end_of_command(&mut self) -> Result<bool, CompileError> {
        Ok(matches!(self.lex.peek()?.0, Tok::Pipe | Tok::Eof))
    }

    fn field_name(&mut self) -> Result<String, CompileError> {
        match self.lex.next()? {
            (Tok::Ident(name), _, _) => Ok(name),
            (tok, start, end) => Err(self.lex.unexpected(&tok, start, end)),
        }
    }

    fn expr(&mut self) -> Result<Expr, CompileError> {
        self.or_expr()
    }

    fn or_expr(&mut self) -> Result<Expr, CompileError> {
        let mut left = self.and_expr()?;
        while self.eat_keyword("or")? {
            let right = self.and_expr()?;
            left = Expr::Bin(BinOp::Or, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and_expr(&mut self) -> Result<Expr, CompileError> {
        let mut left = self.not_expr()?;
        while self.eat_keyword("and")? {
            let right = self.not_expr()?;
            left = Expr::Bin(BinOp::And, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not_expr(&mut self) -> Result<Expr, CompileError> {
        if self.eat_keyword("not")? {
            return Ok(Expr::Not(Box::new(self.not_expr()?)));
        }
        self.comparison()
    }

    fn like_pattern(&mut self) -> Result<Pattern, CompileError> {
        if let Some((regex, _, _)) = self.lex.regex()? {
            return Ok(Pattern::Regex(regex));
        }
        match self.lex.next()? {
            (Tok::Str(text), _, _) => Ok(Pattern::Text(text)),
            (tok, start, end) => Err(self.lex.unexpected(&tok, start, end)),
        }
    }

    fn comparison(&mut self) -> Result<Expr, CompileError> {
        let left = self.additive()?;
        let negated = if self.at_keyword("not")? {
            self.lex.next()?;
            true
        } else {
            false
        };
        if self.eat_keyword("like")? {
            let pattern = self.like_pattern()?;
            return Ok(Expr::Like(Box::new(left), pattern, negated));
        }
        if self.eat_keyword("in")? {
            self.expect(&Tok::LBracket)?;
            let mut items = Vec::new();
            if !self.eat(&Tok::RBracket)? {
                loop {
                    items.push(self.additive()?);
                    if self.eat(&Tok::RBracket)? {
                        break;
                    }
                    self.expect(&Tok::Comma)?;
                }
            }
            return Ok(Expr::In(Box::new(left), items, negated));
        }
        if negated {
            let (tok, start, end) = self.lex.next()?;
            return Err(self.lex.unexpected(&tok, start, end));
        }
        let op = match &self.lex.peek()?.0 {
            Tok::Op("=") => BinOp::Eq,
            Tok::Op("!=") => BinOp::Ne,
            Tok::Op("<") => BinOp::Lt,
            Tok::Op("<=") => BinOp::Le,
            Tok::Op(">") => BinOp::Gt,
            Tok::Op(">=") => BinOp::Ge,
            Tok::Op("=~") => {
                self.lex.next()?;
                let pattern = match self.lex.regex()? {
                    Some((regex, _, _)) => Pattern::Regex(regex),
                    None => match self.lex.next()? {
                        (Tok::Str(text), start, end) => {
                            Pattern::Regex(Regex::new(&regex::escape(&text)).map_err(|e| {
                                CompileError {
                                    message: e.to_string(),
                                    start,
                                    end,
                                }
                            })?)
                        }
                        (tok, start, end) => return Err(self.lex.unexpected(&tok, start, end)),
                    },
                };
                return Ok(Expr::Like(Box::new(left), pattern, false));
            }
            _ => return Ok(left),
        };
        self.lex.next()?;
        let right = self.additive()?;
        Ok(Expr::Bin(op, Box::new(left), Box::new(right)))
    }

    fn additive(&mut self) -> Result<Expr, CompileError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.lex.peek()?.0 {
                Tok::Op("+") => BinOp::Add,
                Tok::Op("-") => BinOp::Sub,
                _ => return Ok(left),
            };
            self.lex.next()?;
            let right = self.multiplicative()?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, CompileError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.lex.peek()?.0 {
                Tok::Star => BinOp::Mul,
                Tok::Op("/") => BinOp::Div,
                Tok::Op("%") => BinOp::Mod,
                _ => return Ok(left),
            };
            self.lex.next()?;
            let right = self.unary()?;
            left = Expr::Bin(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, CompileError> {
        if self.eat(&Tok::Op("-"))? {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, CompileError> {
        let (tok, start, end) = self.lex.next()?;
        match tok {
            Tok::Num(n) => Ok(Expr::Lit(Value::Num(n))),
            Tok::Str(s) => Ok(Expr::Lit(Value::Str(s))),
            Tok::Duration(ms, _) => Ok(Expr::Period(ms)),
            Tok::LParen => {
                let inner = self.expr()?;
                self.expect(&Tok::RParen)?;
                Ok(inner)
            }
            Tok::Ident(name) => {
                if self.lex.peek()?.0 != Tok::LParen {
                    if name.eq_ignore_ascii_case("true") {
                        return Ok(Expr::Lit(Value::Bool(true)));
                    }
                    if name.eq_ignore_ascii_case("false") {
                        return Ok(Expr::Lit(Value::Bool(false)));
                    }
                    return Ok(Expr::Field(name));
                }
                let Some((func, least, most)) = Func::named(&name) else {
                    return Err(self.lex.error(
                        format!("Unknown function or aggregation used in this context: {name}"),
                        start,
                        end,
                    ));
                };
                self.lex.next()?;
                let args = self.arguments()?;
                if args.len() < least || args.len() > most {
                    return Err(self.lex.error(
                        format!("{name} takes between {least} and {most} arguments"),
                        start,
                        self.lex.pos,
                    ));
                }
                if func == Func::Bin && !matches!(args[0], Expr::Period(_)) {
                    return Err(self.lex.error(
                        "bin() takes a time period such as 5m",
                        start,
                        self.lex.pos,
                    ));
                }
                Ok(Expr::Call(func, args))
            }
            other => Err(self.lex.unexpected(&other, start, end)),
        }
    }

    /// Arguments after `(`, through `)`.
    fn arguments(&mut self) -> Result<Vec<Expr>, CompileError> {
        let mut args = Vec::new();
        if self.eat(&Tok::RParen)? {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat(&Tok::RParen)? {
                return Ok(args);
            }
            self.expect(&Tok::Comma)?;
        }
    }

    /// `expr [as name]`, named by its text when not aliased.
    fn named(&mut self) -> Result<Named, CompileError> {
        let start = self.lex.peek()?.1;
        let expr = self.expr()?;
        let end = self
            .lex
            .peeked
            .as_ref()
            .map_or(self.lex.pos, |(_, s, _)| *s);
        let name = if self.eat_keyword("as")? {
            self.field_name()?
        } else {
            match &expr {
                Expr::Field(f) => f.clone(),
                _ => self.lex.slice(start, end),
            }
        };
        Ok(Named { expr, name })
    }

    fn named_list(&mut self, stop_at_by: bool) -> Result<Vec<Named>, CompileError> {
        let mut items = vec![self.named()?];
        while self.eat(&Tok::Comma)? {
            items.push(self.named()?);
        }
        if !(self.end_of_command()? || stop_at_by && self.at_keyword("by")?) {
            let (tok, start, end) = self.lex.next()?;
            return Err(self.lex.unexpected(&tok, start, end));
        }
        Ok(items)
    }

    fn aggregate(&mut self) -> Result<Aggregate, CompileError> {
        let (tok, start, end) = self.lex.next()?;
        let Tok::Ident(name) = tok else {
            return Err(self.lex.unexpected(&tok, start, end));
        };
        let func = match name.to_ascii_lowercase().as_str() {
            "count" => AggFunc::Count,
            "count_distinct" => AggFunc::CountDistinct,
            "sum" => AggFunc::Sum,
            "avg" => AggFunc::Avg,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            "earliest" => AggFunc::Earliest,
            "latest" => AggFunc::Latest,
            "pct" | "percentile" => AggFunc::Pct,
            "stddev" => AggFunc::Stddev,
            _ => {
                return Err(self.lex.error(
                    format!("Unknown function or aggregation used in this context: {name}"),
                    start,
                    end,
                ))
            }
        };
        self.expect(&Tok::LParen)?;
        let mut arg = None;
        let mut percentile = 0.0;
        if self.eat(&Tok::Star)? {
            if func != AggFunc::Count {
                return Err(self.lex.error(
                    format!("{name}(*) is not allowed; name a field"),
                    start,
                    self.lex.pos,
                ));
            }
            self.expect(&Tok::RParen)?;
        } else if !self.eat(&Tok::RParen)? {
            arg = Some(self.expr()?);
            if func == AggFunc::Pct {
                self.expect(&Tok::Comma)?;
                match self.lex.next()? {
                    (Tok::Num(p), _, _) if (0.0..=100.0).contains(&p) => percentile = p,
                    (tok, s, e) => return Err(self.lex.unexpected(&tok, s, e)),
                }
            }
            self.expect(&Tok::RParen)?;
        } else if func != AggFunc::Count {
            return Err(self
                .lex
                .error(format!("{name}() needs a field"), start, self.lex.pos));
        }
        let text_end = self
            .lex
            .peeked
            .as_ref()
            .map_or(self.lex.pos, |(_, s, _)| *s);
        let name = if self.eat_keyword("as")? {
            self.field_name()?
        } else {
            self.lex.slice(start, text_end)
        };
        Ok(Aggregate {
            func,
            arg,
            percentile,
            name,
        })
    }

    fn command(&mut self) -> Result<Command, CompileError> {
        let (tok, start, end) = self.lex.next()?;
        let Tok::Ident(word) = &tok else {
            return Err(self.lex.unexpected(&tok, start, end));
        };
        match word.to_ascii_lowercase().as_str() {
            "fields" => Ok(Command::Fields(self.named_list(false)?)),
            "display" => {
                let mut names = vec![self.field_name()?];
                while self.eat(&Tok::Comma)? {
                    names.push(self.field_name()?);
                }
                Ok(Command::Display(names))
            }
            "filter" => Ok(Command::Filter(self.expr()?)),
            "stats" => {
                let mut aggregates = vec![self.aggregate()?];
                while self.eat(&Tok::Comma)? {
                    aggregates.push(self.aggregate()?);
                }
                let by = if self.eat_keyword("by")? {
                    self.named_list(false)?
                } else {
                    Vec::new()
                };
                Ok(Command::Stats { aggregates, by })
            }
            "sort" => {
                let mut keys = Vec::new();
                loop {
                    let expr = self.expr()?;
                    let descending = if self.eat_keyword("desc")? {
                        true
                    } else {
                        self.eat_keyword("asc")?;
                        false
                    };
                    keys.push((expr, descending));
                    if !self.eat(&Tok::Comma)? {
                        break;
                    }
                }
                Ok(Command::Sort(keys))
            }
            "limit" => match self.lex.next()? {
                (Tok::Num(n), _, _) if (1.0..=10_000.0).contains(&n) && n.fract() == 0.0 => {
                    Ok(Command::Limit(n as usize))
                }
                (tok, s, e) => Err(self.lex.error(
                    format!(
                        "limit takes a whole number between 1 and 10000, not {}",
                        tok.describe()
                    ),
                    s,
                    e,
                )),
            },
            "parse" => self.parse_command(start),
            "dedup" => {
                let mut names = vec![self.field_name()?];
                while self.eat(&Tok::Comma)? {
                    names.push(self.field_name()?);
                }
                Ok(Command::Dedup(names))
            }
            other => Err(self.lex.error(
                format!(
                    "Berth's Logs Insights does not support the command '{other}' \
                     (supported: fields, display, filter, stats, sort, limit, parse, dedup)"
                ),
                start,
                end,
            )),
        }
    }

    fn parse_command(&mut self, start: usize) -> Result<Command, CompileError> {
        // `parse [field] "glob" as a, b` or `parse [field] /regex/`.
        let glob_next = matches!(self.lex.peek()?.0, Tok::Str(_));
        let source = if glob_next || self.lex.regex_ahead() {
            Expr::Field("@message".into())
        } else {
            Expr::Field(self.field_name()?)
        };
        if let Some((regex, rs, re)) = self.lex.regex()? {
            let names: Vec<String> = regex.capture_names().flatten().map(String::from).collect();
            if names.is_empty() {
                return Err(self.lex.error(
                    "parse with a regular expression needs named groups such as (?<name>...)",
                    rs,
                    re,
                ));
            }
            if self.at_keyword("as")? {
                let (tok, s, e) = self.lex.next()?;
                return Err(self.lex.unexpected(&tok, s, e));
            }
            return Ok(Command::Parse {
                source,
                how: ParseHow::Regex(regex, names),
            });
        }
        let (tok, gs, ge) = self.lex.next()?;
        let Tok::Str(glob) = tok else {
            return Err(self.lex.unexpected(&tok, gs, ge));
        };
        if !self.eat_keyword("as")? {
            let (tok, s, e) = self.lex.next()?;
            return Err(self.lex.unexpected(&tok, s, e));
        }
        let mut names = vec![self.field_name()?];
        while self.eat(&Tok::Comma)? {
            names.push(self.field_name()?);
        }
        let stars = glob.matches('*').count();
        if stars != names.len() {
            return Err(self.lex.error(
                format!(
                    "the parse pattern has {stars} wildcards but {} field names",
                    names.len()
                ),
                start,
                self.lex.pos,
            ));
        }
        let pieces: Vec<&str> = glob.split('*').collect();
        let mut pattern = String::from("(?s)");
        for (i, piece) in pieces.iter().enumerate() {
            pattern.push_str(&regex::escape(piece));
            if i + 1 < pieces.len() {
                // The last wildcard takes the rest when nothing follows it.
                let last = i + 2 == pieces.len() && pieces[i + 1].is_empty();
                pattern.push_str(if last { "(.*)" } else { "(.*?)" });
            }
        }
        let regex = Regex::new(&pattern).map_err(|e| CompileError {
            message: format!("invalid parse pattern: {e}"),
            start: gs,
            end: ge,
        })?;
        Ok(Command::Parse {
            source,
            how: ParseHow::Glob(regex, names),
        })
    }
}

impl Lexer {
    /// Whether the next non-space character starts a regex literal.
    fn regex_ahead(&self) -> bool {
        let from = self.peeked.as_ref().map_or(self.pos, |(_, s, _)| *s);
        self.chars[from..]
            .iter()
            .find(|c| !c.is_whitespace())
            .is_some_and(|c| *c == '/')
    }
}

impl Query {
    /// Compiles a Logs Insights query.
    pub fn parse(text: &str) -> Result<Query, CompileError> {
        let mut parser = Parser {
            lex: Lexer::new(text),
        };
        let mut commands = Vec::new();
        loop {
            if parser.lex.peek()?.0 == Tok::Eof {
                if commands.is_empty() {
                    // An empty query lists events.
                    break;
                }
                let (_, start, end) = parser.lex.next()?;
                return Err(parser.lex.error(
                    "the query ends with '|' and no command after it",
                    start,
                    end,
                ));
            }
            commands.push(parser.command()?);
            let (tok, start, end) = parser.lex.next()?;
            match tok {
                Tok::Eof => break,
                Tok::Pipe => continue,
                other => return Err(parser.lex.unexpected(&other, start, end)),
            }
        }
        Ok(Query::plan(commands))
    }

    fn plan(commands: Vec<Command>) -> Query {
        let mut columns: Vec<String> = Vec::new();
        let mut chosen = false;
        let mut event_rows = true;
        let add = |columns: &mut Vec<String>, name: &str| {
            if !columns.iter().any(|c| c == name) {
                columns.push(name.to_string());
            }
        };
        let mut parsed: Vec<String> = Vec::new();
        for command in &commands {
            match command {
                Command::Fields(items) => {
                    chosen = true;
                    for item in items {
                        add(&mut columns, &item.name);
                    }
                }
                Command::Parse { how, .. } => {
                    let (ParseHow::Glob(_, names) | ParseHow::Regex(_, names)) = how;
                    parsed.extend(names.iter().cloned());
                }
                Command::Stats { aggregates, by } => {
                    chosen = true;
                    event_rows = false;
                    columns.clear();
                    parsed.clear();
                    for item in by {
                        add(&mut columns, &item.name);
                    }
                    for aggregate in aggregates {
                        add(&mut columns, &aggregate.name);
                    }
                }
                Command::Display(names) => {
                    chosen = true;
                    columns.clear();
                    parsed.clear();
                    for name in names {
                        add(&mut columns, name);
                    }
                }
                _ => {}
            }
        }
        if !chosen {
            for name in DEFAULT_COLUMNS {
                add(&mut columns, name);
            }
        }
        for name in parsed {
            add(&mut columns, &name);
        }
        Query {
            commands,
            columns,
            event_rows,
        }
    }

    /// The columns results show, in order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }
}

// ---------------------------------------------------------------- running ---

enum AggState {
    Count(u64),
    Distinct(HashSet<String>, bool),
    Sum(f64, bool),
    Avg(f64, u64),
    Min(Option<Value>),
    Max(Option<Value>),
    Earliest(Option<(i64, Value)>),
    Latest(Option<(i64, Value)>),
    Pct(Vec<f64>),
    Stddev(u64, f64, f64),
}

impl AggState {
    fn new(func: AggFunc) -> AggState {
        match func {
            AggFunc::Count => AggState::Count(0),
            AggFunc::CountDistinct => AggState::Distinct(HashSet::new(), false),
            AggFunc::Sum => AggState::Sum(0.0, false),
            AggFunc::Avg => AggState::Avg(0.0, 0),
            AggFunc::Min => AggState::Min(None),
            AggFunc::Max => AggState::Max(None),
            AggFunc::Earliest => AggState::Earliest(None),
            AggFunc::Latest => AggState::Latest(None),
            AggFunc::Pct => AggState::Pct(Vec::new()),
            AggFunc::Stddev => AggState::Stddev(0, 0.0, 0.0),
        }
    }

    fn add(&mut self, aggregate: &Aggregate, record: &Record) {
        let value = match &aggregate.arg {
            None => {
                if let AggState::Count(n) = self {
                    *n += 1;
                }
                return;
            }
            Some(arg) => arg.eval(record),
        };
        if value.is_null() {
            return;
        }
        let time = || match record.get("@timestamp") {
            Value::Time(t) => t,
            _ => 0,
        };
        match self {
            AggState::Count(n) => *n += 1,
            AggState::Distinct(set, overflow) => {
                if set.len() < MAX_DISTINCT {
                    set.insert(value.render().into_owned());
                } else {
                    *overflow = true;
                }
            }
            AggState::Sum(total, any) => {
                if let Some(n) = value.as_num() {
                    *total += n;
                    *any = true;
                }
            }
            AggState::Avg(total, count) => {
                if let Some(n) = value.as_num() {
                    *total += n;
                    *count += 1;
                }
            }
            AggState::Min(best) => {
                if best
                    .as_ref()
                    .is_none_or(|b| compare_values(&value, b) == Ordering::Less)
                {
                    *best = Some(value);
                }
            }
            AggState::Max(best) => {
                if best
                    .as_ref()
                    .is_none_or(|b| compare_values(&value, b) == Ordering::Greater)
                {
                    *best = Some(value);
                }
            }
            AggState::Earliest(best) => {
                let t = time();
                if best.as_ref().is_none_or(|(bt, _)| t < *bt) {
                    *best = Some((t, value));
                }
            }
            AggState::Latest(best) => {
                let t = time();
                if best.as_ref().is_none_or(|(bt, _)| t >= *bt) {
                    *best = Some((t, value));
                }
            }
            AggState::Pct(values) => {
                if let Some(n) = value.as_num() {
                    if values.len() < MAX_PCT_VALUES {
                        values.push(n);
                    }
                }
            }
            AggState::Stddev(count, mean, m2) => {
                if let Some(x) = value.as_num() {
                    *count += 1;
                    let delta = x - *mean;
                    *mean += delta / *count as f64;
                    *m2 += delta * (x - *mean);
                }
            }
        }
    }

    fn finish(self, aggregate: &Aggregate) -> Value {
        match self {
            AggState::Count(n) => Value::Num(n as f64),
            AggState::Distinct(set, _) => Value::Num(set.len() as f64),
            AggState::Sum(total, any) => {
                if any {
                    Value::Num(total)
                } else {
                    Value::Null
                }
            }
            AggState::Avg(total, count) => {
                if count == 0 {
                    Value::Null
                } else {
                    Value::Num(total / count as f64)
                }
            }
            AggState::Min(v) | AggState::Max(v) => v.unwrap_or(Value::Null),
            AggState::Earliest(v) | AggState::Latest(v) => v.map_or(Value::Null, |(_, v)| v),
            AggState::Pct(mut values) => {
                if values.is_empty() {
                    return Value::Null;
                }
                values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
                let rank = (aggregate.percentile / 100.0 * values.len() as f64).ceil() as usize;
                Value::Num(values[rank.clamp(1, values.len()) - 1])
            }
            AggState::Stddev(count, _, m2) => {
                if count < 2 {
                    Value::Null
                } else {
                    Value::Num((m2 / (count - 1) as f64).sqrt())
                }
            }
        }
    }
}

/// The collector a blocking command feeds.
enum Collector {
    Stats {
        /// Group key (rendered) -> the group's key values and states.
        groups: BTreeMap<Vec<String>, (Vec<Value>, Vec<AggState>)>,
    },
    Sort {
        rows: Vec<Record>,
        /// Keep only this many (a limit follows).
        keep: Option<usize>,
    },
}

/// One query running over pushed records.
pub struct Execution<'q> {
    query: &'q Query,
    /// Index of the first blocking command (`commands.len()` when none).
    split: usize,
    limits_seen: HashMap<usize, usize>,
    dedup_seen: HashMap<usize, HashSet<Vec<String>>>,
    collector: Option<Collector>,
    /// Rows that passed every command when there is no blocking one.
    rows: Vec<Record>,
    result_limit: usize,
    /// Records that passed the streaming commands.
    pub matched: u64,
    done: bool,
}

fn sort_rows(rows: &mut [Record], keys: &[(Expr, bool)]) {
    rows.sort_by(|a, b| {
        for (expr, descending) in keys {
            let (x, y) = (expr.eval(a), expr.eval(b));
            let order = match (x.is_null(), y.is_null()) {
                (true, true) => Ordering::Equal,
                // Missing values sort last either way.
                (true, false) => return Ordering::Greater,
                (false, true) => return Ordering::Less,
                _ => compare_values(&x, &y),
            };
            let order = if *descending { order.reverse() } else { order };
            if order != Ordering::Equal {
                return order;
            }
        }
        Ordering::Equal
    });
}

fn parse_into(record: &mut Record, source: &Expr, how: &ParseHow) {
    let text = source.eval(record);
    if text.is_null() {
        return;
    }
    let text = text.render().into_owned();
    match how {
        ParseHow::Glob(regex, names) => {
            if let Some(caps) = regex.captures(&text) {
                for (i, name) in names.iter().enumerate() {
                    if let Some(m) = caps.get(i + 1) {
                        record.set(name, Value::Str(m.as_str().to_string()));
                    }
                }
            }
        }
        ParseHow::Regex(regex, names) => {
            if let Some(caps) = regex.captures(&text) {
                for name in names {
                    if let Some(m) = caps.name(name) {
                        record.set(name, Value::Str(m.as_str().to_string()));
                    }
                }
            }
        }
    }
}

impl<'q> Execution<'q> {
    /// Starts running `query`; at most `result_limit` rows come out.
    pub fn new(query: &'q Query, result_limit: usize) -> Execution<'q> {
        let split = query
            .commands
            .iter()
            .position(Command::blocking)
            .unwrap_or(query.commands.len());
        let collector = query
            .commands
            .get(split)
            .map(|c| Self::collector_for(query, split, c, result_limit));
        Execution {
            query,
            split,
            limits_seen: HashMap::new(),
            dedup_seen: HashMap::new(),
            collector,
            rows: Vec::new(),
            result_limit,
            matched: 0,
            done: false,
        }
    }

    fn collector_for(
        query: &Query,
        at: usize,
        command: &Command,
        result_limit: usize,
    ) -> Collector {
        match command {
            Command::Stats { .. } => Collector::Stats {
                groups: BTreeMap::new(),
            },
            _ => {
                // A sort followed only by projections and a limit needs to
                // keep just the top rows.
                let mut keep = None;
                let mut reached_end = true;
                for later in &query.commands[at + 1..] {
                    match later {
                        Command::Fields(_) | Command::Display(_) => {}
                        Command::Limit(n) => {
                            keep = Some(*n);
                            reached_end = false;
                            break;
                        }
                        _ => {
                            reached_end = false;
                            break;
                        }
                    }
                }
                if reached_end {
                    keep = Some(result_limit);
                }
                Collector::Sort {
                    rows: Vec::new(),
                    keep,
                }
            }
        }
    }

    /// Whether more records can change the result (a `limit` before any
    /// `stats`/`sort` has been reached, so a scan may stop).
    pub fn wants_more(&self) -> bool {
        !self.done
    }

    /// Runs one record through the query.
    pub fn push(&mut self, mut record: Record) -> Result<(), RunError> {
        if self.done {
            return Ok(());
        }
        let query = self.query;
        for (i, command) in query.commands[..self.split].iter().enumerate() {
            match command {
                Command::Filter(expr) => {
                    if !expr.eval(&record).truthy() {
                        return Ok(());
                    }
                }
                Command::Fields(items) => {
                    for item in items {
                        if !matches!(&item.expr, Expr::Field(f) if *f == item.name) {
                            let value = item.expr.eval(&record);
                            record.set(&item.name, value);
                        }
                    }
                }
                Command::Parse { source, how } => parse_into(&mut record, source, how),
                Command::Display(_) => {}
                Command::Dedup(names) => {
                    let key: Vec<String> = names
                        .iter()
                        .map(|n| record.get(n).render().into_owned())
                        .collect();
                    let seen = self.dedup_seen.entry(i).or_default();
                    if !seen.insert(key) {
                        return Ok(());
                    }
                    if seen.len() > MAX_ROWS {
                        return Err(RunError(format!(
                            "dedup saw more than {MAX_ROWS} distinct values; narrow the query"
                        )));
                    }
                }
                Command::Limit(n) => {
                    let seen = self.limits_seen.entry(i).or_insert(0);
                    if *seen >= *n {
                        self.done = true;
                        return Ok(());
                    }
                    *seen += 1;
                    if *seen == *n {
                        // No later record can pass this limit: this one
                        // finishes its way and the scan may stop.
                        self.done = true;
                    }
                }
                Command::Stats { .. } | Command::Sort(_) => {}
            }
        }
        self.matched += 1;
        self.accept(record)
    }

    fn accept(&mut self, record: Record) -> Result<(), RunError> {
        match &mut self.collector {
            None => {
                self.rows.push(record);
                if self.rows.len() >= self.result_limit {
                    self.done = true;
                }
                Ok(())
            }
            Some(Collector::Stats { groups }) => {
                let Some(Command::Stats { aggregates, by }) = self.query.commands.get(self.split)
                else {
                    return Ok(());
                };
                let values: Vec<Value> = by.iter().map(|b| b.expr.eval(&record)).collect();
                let key: Vec<String> = values.iter().map(|v| v.render().into_owned()).collect();
                if !groups.contains_key(&key) && groups.len() >= MAX_ROWS {
                    return Err(RunError(format!(
                        "stats produced more than {MAX_ROWS} groups; narrow the query"
                    )));
                }
                let (_, states) = groups.entry(key).or_insert_with(|| {
                    (
                        values,
                        aggregates.iter().map(|a| AggState::new(a.func)).collect(),
                    )
                });
                for (state, aggregate) in states.iter_mut().zip(aggregates) {
                    state.add(aggregate, &record);
                }
                Ok(())
            }
            Some(Collector::Sort { rows, keep }) => {
                rows.push(record);
                let Some(Command::Sort(keys)) = self.query.commands.get(self.split) else {
                    return Ok(());
                };
                match keep {
                    Some(k) if rows.len() >= (*k).max(1) * 2 + 1024 => {
                        sort_rows(rows, keys);
                        rows.truncate(*k);
                    }
                    None if rows.len() > MAX_ROWS => {
                        return Err(RunError(format!(
                            "sort needs more than {MAX_ROWS} rows; add a limit or narrow the query"
                        )));
                    }
                    _ => {}
                }
                Ok(())
            }
        }
    }

    /// Finishes the query: the rows, each as (field, value) pairs.
    pub fn finish(self) -> Result<Vec<Vec<(String, String)>>, RunError> {
        let query = self.query;
        let mut rows = match self.collector {
            None => self.rows,
            Some(collector) => {
                let rows = Self::drain(query, self.split, collector);
                run_materialized(&query.commands[self.split + 1..], rows)?
            }
        };
        rows.truncate(self.result_limit);
        Ok(rows
            .into_iter()
            .map(|record| {
                let mut out: Vec<(String, String)> = query
                    .columns
                    .iter()
                    .filter_map(|column| {
                        let value = record.get(column);
                        (!value.is_null()).then(|| (column.clone(), value.render().into_owned()))
                    })
                    .collect();
                if query.event_rows {
                    if let Some(ptr) = record.pointer() {
                        out.push(("@ptr".to_string(), ptr));
                    }
                }
                out
            })
            .collect())
    }

    fn drain(query: &Query, at: usize, collector: Collector) -> Vec<Record> {
        match collector {
            Collector::Stats { groups } => {
                let Some(Command::Stats { aggregates, by }) = query.commands.get(at) else {
                    return Vec::new();
                };
                groups
                    .into_values()
                    .map(|(values, states)| {
                        let mut fields: Vec<(String, Value)> = by
                            .iter()
                            .zip(values)
                            .map(|(b, v)| (b.name.clone(), v))
                            .collect();
                        for (state, aggregate) in states.into_iter().zip(aggregates) {
                            fields.push((aggregate.name.clone(), state.finish(aggregate)));
                        }
                        Record::from_fields(fields)
                    })
                    .collect()
            }
            Collector::Sort { mut rows, keep } => {
                if let Some(Command::Sort(keys)) = query.commands.get(at) {
                    sort_rows(&mut rows, keys);
                }
                if let Some(k) = keep {
                    rows.truncate(k);
                }
                rows
            }
        }
    }
}

/// Runs commands over collected rows.
fn run_materialized(commands: &[Command], mut rows: Vec<Record>) -> Result<Vec<Record>, RunError> {
    for command in commands {
        rows = match command {
            Command::Filter(expr) => rows.into_iter().filter(|r| expr.eval(r).truthy()).collect(),
            Command::Fields(items) => {
                for record in &mut rows {
                    for item in items {
                        if !matches!(&item.expr, Expr::Field(f) if *f == item.name) {
                            let value = item.expr.eval(record);
                            record.set(&item.name, value);
                        }
                    }
                }
                rows
            }
            Command::Display(_) => rows,
            Command::Parse { source, how } => {
                for record in &mut rows {
                    parse_into(record, source, how);
                }
                rows
            }
            Command::Limit(n) => {
                rows.truncate(*n);
                rows
            }
            Command::Sort(keys) => {
                sort_rows(&mut rows, keys);
                rows
            }
            Command::Dedup(names) => {
                let mut seen = HashSet::new();
                rows.into_iter()
                    .filter(|r| {
                        seen.insert(
                            names
                                .iter()
                                .map(|n| r.get(n).render().into_owned())
                                .collect::<Vec<_>>(),
                        )
                    })
                    .collect()
            }
            Command::Stats { aggregates, by } => {
                let mut groups: BTreeMap<Vec<String>, (Vec<Value>, Vec<AggState>)> =
                    BTreeMap::new();
                for record in &rows {
                    let values: Vec<Value> = by.iter().map(|b| b.expr.eval(record)).collect();
                    let key: Vec<String> = values.iter().map(|v| v.render().into_owned()).collect();
                    let (_, states) = groups.entry(key).or_insert_with(|| {
                        (
                            values,
                            aggregates.iter().map(|a| AggState::new(a.func)).collect(),
                        )
                    });
                    for (state, aggregate) in states.iter_mut().zip(aggregates) {
                        state.add(aggregate, record);
                    }
                }
                groups
                    .into_values()
                    .map(|(values, states)| {
                        let mut fields: Vec<(String, Value)> = by
                            .iter()
                            .zip(values)
                            .map(|(b, v)| (b.name.clone(), v))
                            .collect();
                        for (state, aggregate) in states.into_iter().zip(aggregates) {
                            fields.push((aggregate.name.clone(), state.finish(aggregate)));
                        }
                        Record::from_fields(fields)
                    })
                    .collect()
            }
        };
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Arc<Origin> {
        Arc::new(Origin {
            log: "000000000000:/app/web".into(),
            stream: "s1".into(),
            pointer_prefix: "p:".into(),
        })
    }

    fn event(ts: i64, message: &str) -> Record {
        Record::from_event(Event {
            timestamp: ts,
            ingestion_time: ts + 5,
            message: message.to_string(),
            origin: origin(),
            seq: ts,
        })
    }

    fn run(query: &str, events: &[(i64, &str)]) -> Vec<Vec<(String, String)>> {
        let q = Query::parse(query).unwrap_or_else(|e| panic!("{query}: {e}"));
        let mut exec = Execution::new(&q, 10_000);
        for (ts, m) in events {
            if !exec.wants_more() {
                break;
            }
            exec.push(event(*ts, m)).unwrap();
        }
        exec.finish().unwrap()
    }

    fn col<'a>(row: &'a [(String, String)], name: &str) -> Option<&'a str> {
        row.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    const MIN: i64 = 60_000;
    const T0: i64 = 1_700_000_000_000 - 1_700_000_000_000 % MIN;

    #[test]
    fn stats_count_by_bin_counts_each_minute() {
        let events: Vec<(i64, &str)> = vec![
            (T0 + 1, "a"),
            (T0 + 59_999, "b"),
            (T0 + MIN, "c"),
            (T0 + 3 * MIN + 5, "d"),
            (T0 + 3 * MIN + 6, "e"),
            (T0 + 3 * MIN + 7, "f"),
        ];
        let rows = run("stats count(*) by bin(1m)", &events);
        let got: Vec<(String, String)> = rows
            .iter()
            .map(|r| {
                (
                    col(r, "bin(1m)").unwrap().to_string(),
                    col(r, "count(*)").unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (format_timestamp(T0), "2".to_string()),
                (format_timestamp(T0 + MIN), "1".to_string()),
                (format_timestamp(T0 + 3 * MIN), "3".to_string()),
            ]
        );
        assert!(rows.iter().all(|r| col(r, "@ptr").is_none()));
        // Whole bins keep their milliseconds, as Logs Insights prints them.
        assert_eq!(format_timestamp(T0), "2023-11-14 22:13:00.000");
        assert_eq!(format_timestamp(T0 + 3), "2023-11-14 22:13:00.003");
    }

    #[test]
    fn fields_filter_sort_limit() {
        let events = [
            (T0, "GET /a 200 12"),
            (T0 + 1, "GET /b 500 40"),
            (T0 + 2, "POST /c 201 7"),
            (T0 + 3, "GET /d 503 99"),
        ];
        let rows = run(
            "fields @timestamp, @message | filter @message like /5\\d\\d/ | sort @timestamp desc | limit 1",
            &events,
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(col(&rows[0], "@message"), Some("GET /d 503 99"));
        assert_eq!(
            col(&rows[0], "@timestamp"),
            Some(format_timestamp(T0 + 3).as_str())
        );
        assert!(col(&rows[0], "@ptr").is_some());
        assert!(col(&rows[0], "@logStream").is_none());
    }

    #[test]
    fn parse_glob_and_regex_and_stats_by_field() {
        let events = [
            (T0, "GET /a 200 12"),
            (T0 + 1, "GET /b 500 40"),
            (T0 + 2, "POST /c 201 7"),
            (T0 + 3, "GET /d 503 99"),
        ];
        let rows = run(
            "parse @message \"* * * *\" as method, path, status, ms \
             | stats count(*) as n, sum(ms) as total, avg(ms), max(ms), min(ms) by method \
             | sort n desc",
            &events,
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(col(&rows[0], "method"), Some("GET"));
        assert_eq!(col(&rows[0], "n"), Some("3"));
        assert_eq!(col(&rows[0], "total"), Some("151"));
        assert_eq!(col(&rows[0], "max(ms)"), Some("99"));
        assert_eq!(col(&rows[0], "min(ms)"), Some("12"));
        assert_eq!(col(&rows[1], "avg(ms)"), Some("7"));
        let rows = run(
            "parse @message /(?<verb>\\w+) (?<path>\\S+) (?<code>\\d+)/ | filter code >= 500 | display path, code",
            &events,
        );
        let paths: Vec<_> = rows.iter().map(|r| col(r, "path").unwrap()).collect();
        assert_eq!(paths, vec!["/b", "/d"]);
        assert!(rows.iter().all(|r| col(r, "verb").is_none()));
    }

    #[test]
    fn json_fields_comparisons_in_and_functions() {
        let events = [
            (
                T0,
                r#"{"level":"ERROR","latency":120,"req":{"path":"/a"},"tags":["x","y"]}"#,
            ),
            (
                T0 + 1,
                r#"{"level":"WARN","latency":20,"req":{"path":"/b"}}"#,
            ),
            (T0 + 2, r#"{"level":"INFO","latency":5}"#),
            (T0 + 3, "not json"),
        ];
        let rows = run(
            "filter level in [\"ERROR\", \"WARN\"] and latency > 10 | fields req.path, tags.1, toupper(level) as lv, latency * 2 as double",
            &events,
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(col(&rows[0], "req.path"), Some("/a"));
        assert_eq!(col(&rows[0], "tags.1"), Some("y"));
        assert_eq!(col(&rows[0], "lv"), Some("ERROR"));
        assert_eq!(col(&rows[0], "double"), Some("240"));
        assert_eq!(col(&rows[1], "tags.1"), None);
        let rows = run("filter not ispresent(level) | fields @message", &events);
        assert_eq!(rows.len(), 1);
        let rows = run("filter level != \"INFO\" and level not like /ERR/", &events);
        assert_eq!(rows.len(), 1);
        let rows = run("filter @message =~ /json/", &events);
        assert_eq!(rows.len(), 1);
        let rows = run(
            "stats count_distinct(level) as levels, count(level) as with_level",
            &events,
        );
        assert_eq!(col(&rows[0], "levels"), Some("3"));
        assert_eq!(col(&rows[0], "with_level"), Some("3"));
    }

    #[test]
    fn limit_stops_early_and_dedup_keeps_first() {
        let q = Query::parse("limit 2").unwrap();
        let mut exec = Execution::new(&q, 10_000);
        exec.push(event(T0, "a")).unwrap();
        assert!(exec.wants_more());
        exec.push(event(T0 + 1, "b")).unwrap();
        assert!(!exec.wants_more());
        assert_eq!(exec.finish().unwrap().len(), 2);
        let rows = run(
            "parse @message \"* *\" as k, v | dedup k | display k, v",
            &[(T0, "a 1"), (T0 + 1, "a 2"), (T0 + 2, "b 3")],
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(col(&rows[0], "v"), Some("1"));
    }

    #[test]
    fn sort_keeps_top_rows_across_many_events() {
        let q = Query::parse("fields @message | sort @timestamp desc | limit 3").unwrap();
        let mut exec = Execution::new(&q, 10_000);
        for i in 0..20_000 {
            exec.push(event(T0 + i, &format!("m{i}"))).unwrap();
        }
        let rows = exec.finish().unwrap();
        let messages: Vec<_> = rows.iter().map(|r| col(r, "@message").unwrap()).collect();
        assert_eq!(messages, vec!["m19999", "m19998", "m19997"]);
    }

    #[test]
    fn default_columns_and_earliest_latest_pct() {
        let rows = run("filter @message like \"b\"", &[(T0, "a"), (T0 + 1, "b")]);
        assert_eq!(
            rows[0].iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            vec!["@timestamp", "@message", "@logStream", "@log", "@ptr"]
        );
        let events: Vec<(i64, String)> = (1..=100).map(|i| (T0 + i, format!("v {i}"))).collect();
        let refs: Vec<(i64, &str)> = events.iter().map(|(t, m)| (*t, m.as_str())).collect();
        let rows = run(
            "parse \"v *\" as n | stats earliest(n) as first, latest(n) as last, pct(n, 90) as p90",
            &refs,
        );
        assert_eq!(col(&rows[0], "first"), Some("1"));
        assert_eq!(col(&rows[0], "last"), Some("100"));
        assert_eq!(col(&rows[0], "p90"), Some("90"));
    }

    #[test]
    fn malformed_queries_are_refused_with_a_position() {
        for (query, fragment) in [
            ("fields", "unexpected symbol"),
            ("filter x = ", "unexpected symbol"),
            ("stats count(*) by", "unexpected symbol"),
            ("stats frobnicate(x)", "Unknown function"),
            ("limit 0", "limit takes"),
            ("limit 20000", "limit takes"),
            ("parse @message \"* *\" as a", "wildcards"),
            ("parse @message /(\\d+)/", "named groups"),
            ("sort x |", "no command"),
            ("unmask @message", "does not support the command"),
            ("filter @message like /unterminated", "unterminated"),
            ("stats count(*) by bin(5)", "time period"),
            ("fields a b", "unexpected symbol"),
            ("stats sum(*)", "not allowed"),
        ] {
            let e = Query::parse(query).expect_err(query);
            assert!(e.message.contains(fragment), "{query}: {}", e.message);
        }
        let e = Query::parse("fields a |\n filter ) ").unwrap_err();
        assert_eq!(
            e.message,
            "unexpected symbol found ) at line 2 and position 9"
        );
    }
}
