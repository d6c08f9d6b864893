//! AWS's rule-condition matching and health-check matchers.

use std::net::IpAddr;

use crate::config::{Condition, IpNet};

/// `*` = any run of characters, `?` = exactly one; `fold` compares ASCII case-insensitively.
pub fn wildcard(pattern: &str, text: &str, fold: bool) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let eq = |a: char, b: char| {
        if fold {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && eq(p[pi], t[ti]))) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// What a rule's conditions look at in one request.
pub struct RequestView<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// Without its port.
    pub host: Option<&'a str>,
    pub headers: &'a http::HeaderMap,
    pub source: IpAddr,
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn condition_matches(cond: &Condition, req: &RequestView<'_>) -> bool {
    match cond {
        Condition::PathPattern(values) => values.iter().any(|v| wildcard(v, req.path, false)),
        Condition::HostHeader(values) => match req.host {
            Some(h) => values.iter().any(|v| wildcard(v, h, true)),
            None => false,
        },
        Condition::HttpHeader { name, values } => {
            req.headers.get_all(name.as_str()).iter().any(|hv| {
                let hv = String::from_utf8_lossy(hv.as_bytes());
                values.iter().any(|v| wildcard(v, &hv, true))
            })
        }
        Condition::Method(values) => values.iter().any(|v| v == req.method),
        Condition::QueryString(pairs) => {
            let Some(q) = req.query else { return false };
            let params: Vec<(String, String)> = q
                .split('&')
                .filter(|s| !s.is_empty())
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (decode(k), decode(v)),
                    None => (decode(kv), String::new()),
                })
                .collect();
            pairs.iter().any(|(key, value)| {
                params.iter().any(|(k, v)| {
                    key.as_ref().is_none_or(|key| wildcard(key, k, true))
                        && wildcard(value, v, true)
                })
            })
        }
        Condition::SourceIp(nets) => nets.iter().any(|n| net_contains(n, req.source)),
    }
}

pub fn net_contains(net: &IpNet, ip: IpAddr) -> bool {
    let ip = match (net, ip) {
        (IpNet::V4(_), IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => return false,
        },
        _ => ip,
    };
    net.contains(&ip)
}

/// A health-check matcher: "200", "200-299", "200,202".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeMatcher(Vec<(u16, u16)>);

impl CodeMatcher {
    pub fn parse(s: &str) -> CodeMatcher {
        let mut ranges = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.trim().parse().ok(), b.trim().parse().ok()),
                None => {
                    let v = part.parse().ok();
                    (v, v)
                }
            };
            if let (Some(lo), Some(hi)) = (lo, hi) {
                ranges.push((lo, hi));
            }
        }
        if ranges.is_empty() {
            ranges.push((200, 200));
        }
        CodeMatcher(ranges)
    }

    pub fn matches(&self, code: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| code >= lo && code <= hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("/api/*", "/api/x/y", false));
        assert!(!wildcard("/api/*", "/API/x", false));
        assert!(wildcard("*.example.com", "A.Example.COM", true));
        assert!(wildcard("/a?c", "/abc", false));
        assert!(!wildcard("/a?c", "/abbc", false));
        assert!(wildcard("*", "", false));
        assert!(wildcard("/img/*.png", "/img/a/b.png", false));
        assert!(!wildcard("/img/*.png", "/img/a/b.jpg", false));
    }

    #[test]
    fn conditions() {
        let mut headers = http::HeaderMap::new();
        headers.insert("user-agent", "Mozilla/5.0 Chrome".parse().unwrap());
        let req = RequestView {
            method: "GET",
            path: "/api/items",
            query: Some("version=v2&x=a%20b"),
            host: Some("api.example.com"),
            headers: &headers,
            source: "10.0.0.5".parse().unwrap(),
        };
        assert!(condition_matches(
            &Condition::PathPattern(vec!["/static/*".into(), "/api/*".into()]),
            &req
        ));
        assert!(condition_matches(
            &Condition::HostHeader(vec!["API.example.*".into()]),
            &req
        ));
        assert!(condition_matches(
            &Condition::HttpHeader {
                name: "User-Agent".into(),
                values: vec!["*chrome*".into()]
            },
            &req
        ));
        assert!(!condition_matches(
            &Condition::Method(vec!["POST".into()]),
            &req
        ));
        assert!(condition_matches(
            &Condition::QueryString(vec![(Some("VERSION".into()), "v2".into())]),
            &req
        ));
        assert!(condition_matches(
            &Condition::QueryString(vec![(None, "a b".into())]),
            &req
        ));
        assert!(!condition_matches(
            &Condition::QueryString(vec![(Some("version".into()), "v1".into())]),
            &req
        ));
        assert!(condition_matches(
            &Condition::SourceIp(vec!["10.0.0.0/8".parse().unwrap()]),
            &req
        ));
        assert!(!condition_matches(
            &Condition::SourceIp(vec!["192.168.0.0/16".parse().unwrap()]),
            &req
        ));
    }

    #[test]
    fn matchers() {
        let m = CodeMatcher::parse("200,202-204");
        assert!(m.matches(200) && m.matches(203) && !m.matches(201) && !m.matches(500));
        assert!(CodeMatcher::parse("200-299").matches(204));
    }
}
