//! The network policy: a list of DNS rules, and the decision they make for a name.
//!
//! A rule is `{"domain": D, "action": "allow"|"deny"}` or `{"include": "defaults"}`. `D` is
//! an exact name (`example.com`), a wildcard for the names *below* a domain
//! (`*.example.com`: `a.example.com`, `a.b.example.com`, not `example.com` itself) or `*`
//! (every name). For a name, the most specific matching rule decides: an exact rule beats
//! any wildcard, a longer wildcard beats a shorter one, `*` comes last; between an allow
//! and a deny rule for the same pattern, deny wins.
//!
//! A name no rule matches: with no rules at all, everything is allowed (no enforcement, the
//! platform's default); with at least one allow rule (or an include), it is denied (the
//! list is an allow list); with deny rules only, it is allowed (the list is a block list).

use serde_json::{Map, Value};

/// Most rules a policy may hold (a bound on the memory one request can make us keep).
pub(crate) const MAX_RULES: usize = 1000;

/// What `{"include":"defaults"}` allows: GitHub, npm, PyPI, Docker Hub and the major AI
/// APIs (PROTOCOL.md §13).
pub(crate) const DEFAULTS: &[&str] = &[
    "github.com",
    "*.github.com",
    "*.githubusercontent.com",
    "*.githubassets.com",
    "npmjs.org",
    "*.npmjs.org",
    "npmjs.com",
    "*.npmjs.com",
    "pypi.org",
    "*.pypi.org",
    "pythonhosted.org",
    "*.pythonhosted.org",
    "docker.io",
    "*.docker.io",
    "docker.com",
    "*.docker.com",
    "api.openai.com",
    "api.anthropic.com",
    "generativelanguage.googleapis.com",
    "api.mistral.ai",
    "api.groq.com",
];

/// Include names a rule may use.
const INCLUDES: [&str; 1] = ["defaults"];

/// One rule, as stored (normalised: lowercase, no trailing dot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rule {
    /// `domain` + `action`.
    Domain {
        /// The pattern.
        pattern: Pattern,
        /// Allow (true) or deny.
        allow: bool,
    },
    /// `include`.
    Include(String),
}

/// A rule's `domain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// `*`.
    Any,
    /// `*.suffix`: the names below `suffix`.
    Below(String),
    /// An exact name.
    Exact(String),
}

impl Pattern {
    /// Parses a `domain` value, or says why it is not one.
    pub fn parse(raw: &str) -> Result<Pattern, String> {
        // One trailing dot (a fully qualified name) is the same name; `*.` is not `*`.
        if raw.ends_with("*.") {
            return Err(format!("malformed wildcard {raw:?}: nothing after `*.`"));
        }
        let d = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
        if d == "*" {
            return Ok(Pattern::Any);
        }
        if let Some(rest) = d.strip_prefix("*.") {
            check_name(rest).map_err(|why| format!("malformed wildcard {raw:?}: {why}"))?;
            return Ok(Pattern::Below(rest.to_owned()));
        }
        if d.contains('*') {
            return Err(format!(
                "malformed wildcard {raw:?}: `*` may only be the whole domain or its first label (`*.example.com`)"
            ));
        }
        check_name(&d).map_err(|why| format!("invalid domain {raw:?}: {why}"))?;
        Ok(Pattern::Exact(d))
    }

    /// The rule's `domain` as stored.
    fn as_string(&self) -> String {
        match self {
            Pattern::Any => "*".into(),
            Pattern::Below(s) => format!("*.{s}"),
            Pattern::Exact(s) => s.clone(),
        }
    }

    /// How specific a match of this pattern is (higher wins), if `name` matches.
    fn matches(&self, name: &str) -> Option<usize> {
        match self {
            Pattern::Any => Some(0),
            Pattern::Exact(s) => (s == name).then_some(usize::MAX),
            // At least one label before the suffix (names have no empty labels); a longer
            // suffix is more specific, and any suffix more than `*` (0).
            Pattern::Below(s) => name
                .strip_suffix(s.as_str())
                .filter(|head| head.ends_with('.'))
                .map(|_| s.len()),
        }
    }
}

/// Whether `d` is a DNS name: labels of 1–63 letters, digits, `-` or `_`, not starting or
/// ending with `-`, at most 253 characters in all.
fn check_name(d: &str) -> Result<(), String> {
    if d.is_empty() {
        return Err("empty name".into());
    }
    if d.len() > 253 {
        return Err("longer than 253 characters".into());
    }
    for label in d.split('.') {
        if label.is_empty() {
            return Err("empty label".into());
        }
        if label.len() > 63 {
            return Err(format!("label {label:?} longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "label {label:?} has a character other than a-z, 0-9, - or _"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with -"));
        }
    }
    Ok(())
}

/// A network policy (its rules in order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct NetworkPolicy {
    /// The rules, as given (normalised).
    pub rules: Vec<Rule>,
}

/// What the policy says about one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Resolve it.
    Allow,
    /// Answer REFUSED.
    Deny,
}

impl NetworkPolicy {
    /// Parses and checks a `{"rules":[...]}` document; the error is the 400's message.
    pub fn from_document(obj: &Map<String, Value>) -> Result<NetworkPolicy, String> {
        let rules = match obj.get("rules") {
            Some(Value::Array(r)) => r,
            Some(Value::Null) | None => {
                return Err("`rules` (an array of rules) is required".into())
            }
            Some(other) => return Err(format!("`rules` must be an array, got {other}")),
        };
        if rules.len() > MAX_RULES {
            return Err(format!("at most {MAX_RULES} rules, got {}", rules.len()));
        }
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            out.push(parse_rule(r).map_err(|why| format!("rule {i}: {why}"))?);
        }
        Ok(NetworkPolicy { rules: out })
    }

    /// The document as stored and returned by `GET`.
    pub fn to_document(&self) -> Value {
        let rules: Vec<Value> = self
            .rules
            .iter()
            .map(|r| match r {
                Rule::Domain { pattern, allow } => serde_json::json!({
                    "domain": pattern.as_string(),
                    "action": if *allow { "allow" } else { "deny" },
                }),
                Rule::Include(name) => serde_json::json!({ "include": name }),
            })
            .collect();
        serde_json::json!({ "rules": rules })
    }

    /// Whether a name no rule matches is denied (the list holds an allow rule or an
    /// include).
    pub fn denies_by_default(&self) -> bool {
        self.rules.iter().any(|r| match r {
            Rule::Domain { allow, .. } => *allow,
            Rule::Include(_) => true,
        })
    }

    /// The decision for `name` (any case, trailing dot or not).
    pub fn decide(&self, name: &str) -> Verdict {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        // (specificity, allow): the highest specificity wins, deny before allow on a tie.
        let mut best: Option<(usize, bool)> = None;
        let mut consider = |spec: usize, allow: bool| {
            best = Some(match best {
                Some((s, a)) if s > spec || (s == spec && !a) => (s, a),
                _ => (spec, allow),
            });
        };
        for r in &self.rules {
            match r {
                Rule::Domain { pattern, allow } => {
                    if let Some(spec) = pattern.matches(&name) {
                        consider(spec, *allow);
                    }
                }
                Rule::Include(_) => {
                    for d in DEFAULTS {
                        if let Some(spec) = Pattern::parse(d).ok().and_then(|p| p.matches(&name)) {
                            consider(spec, true);
                        }
                    }
                }
            }
        }
        match best {
            Some((_, true)) => Verdict::Allow,
            Some((_, false)) => Verdict::Deny,
            None if self.denies_by_default() => Verdict::Deny,
            None => Verdict::Allow,
        }
    }
}

fn parse_rule(r: &Value) -> Result<Rule, String> {
    let Some(obj) = r.as_object() else {
        return Err(format!("a rule must be an object, got {r}"));
    };
    let domain = obj.get("domain").filter(|v| !v.is_null());
    let action = obj.get("action").filter(|v| !v.is_null());
    let include = obj.get("include").filter(|v| !v.is_null());
    match (domain, action, include) {
        (Some(d), Some(a), None) => {
            let d = d
                .as_str()
                .ok_or_else(|| format!("domain must be a string, got {d}"))?;
            let allow = match a.as_str() {
                Some("allow") => true,
                Some("deny") => false,
                _ => return Err(format!("action must be \"allow\" or \"deny\", got {a}")),
            };
            Ok(Rule::Domain {
                pattern: Pattern::parse(d)?,
                allow,
            })
        }
        (None, None, Some(i)) => match i.as_str() {
            Some(name) if INCLUDES.contains(&name) => Ok(Rule::Include(name.to_owned())),
            _ => Err(format!("unknown include {i} (known: \"defaults\")")),
        },
        _ => Err(
            "a rule is either {\"domain\": ..., \"action\": \"allow\"|\"deny\"} or {\"include\": \"defaults\"}"
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(doc: &str) -> Result<NetworkPolicy, String> {
        let v: Value = serde_json::from_str(doc).unwrap();
        NetworkPolicy::from_document(v.as_object().unwrap())
    }

    #[test]
    fn the_platform_example_parses_and_decides() {
        let p = policy(
            r#"{"rules":[{"include":"defaults"},{"domain":"example.com","action":"allow"},
               {"domain":"*.example.com","action":"allow"},{"domain":"blocked.com","action":"deny"}]}"#,
        )
        .unwrap();
        assert_eq!(p.decide("example.com"), Verdict::Allow);
        assert_eq!(p.decide("WWW.Example.COM."), Verdict::Allow);
        assert_eq!(p.decide("blocked.com"), Verdict::Deny);
        assert_eq!(p.decide("api.github.com"), Verdict::Allow, "defaults");
        assert_eq!(p.decide("pypi.org"), Verdict::Allow);
        assert_eq!(p.decide("other.org"), Verdict::Deny, "an allow list");
        assert_eq!(p.to_document()["rules"][2]["domain"], "*.example.com");
    }

    #[test]
    fn more_specific_wins_and_deny_wins_ties() {
        let p = policy(
            r#"{"rules":[{"domain":"*","action":"deny"},{"domain":"*.a.com","action":"allow"},
               {"domain":"*.x.a.com","action":"deny"},{"domain":"ok.x.a.com","action":"allow"},
               {"domain":"t.com","action":"allow"},{"domain":"t.com","action":"deny"}]}"#,
        )
        .unwrap();
        assert_eq!(p.decide("b.a.com"), Verdict::Allow);
        assert_eq!(
            p.decide("a.com"),
            Verdict::Deny,
            "*.a.com is below a.com only"
        );
        assert_eq!(p.decide("y.x.a.com"), Verdict::Deny);
        assert_eq!(p.decide("ok.x.a.com"), Verdict::Allow);
        assert_eq!(p.decide("elsewhere.net"), Verdict::Deny);
        assert_eq!(p.decide("t.com"), Verdict::Deny);
        assert_eq!(
            p.decide("xa.com"),
            Verdict::Deny,
            "a suffix that is not a label"
        );
        assert_eq!(
            p.decide("xya.com"),
            Verdict::Deny,
            "a suffix that is not a label"
        );
        // The order of the rules does not matter: a more specific rule listed first still
        // wins, and deny wins a tie whichever comes first.
        let p = policy(
            r#"{"rules":[{"domain":"ok.b.com","action":"allow"},{"domain":"*.b.com","action":"deny"},
               {"domain":"*","action":"deny"},{"domain":"u.com","action":"deny"},
               {"domain":"u.com","action":"allow"},{"domain":"*.x","action":"allow"},
               {"domain":"*.c.b.com","action":"allow"}]}"#,
        )
        .unwrap();
        assert_eq!(p.decide("ok.b.com"), Verdict::Allow);
        assert_eq!(p.decide("no.b.com"), Verdict::Deny);
        assert_eq!(p.decide("u.com"), Verdict::Deny);
        assert_eq!(
            p.decide("a.x"),
            Verdict::Allow,
            "a one-letter suffix beats `*`"
        );
        assert_eq!(
            p.decide("d.c.b.com"),
            Verdict::Allow,
            "the longer suffix wins"
        );
    }

    #[test]
    fn defaults_of_empty_and_block_lists() {
        let empty = policy(r#"{"rules":[]}"#).unwrap();
        assert!(empty.rules.is_empty() && !empty.denies_by_default());
        assert_eq!(empty.decide("anything.example"), Verdict::Allow);
        let block = policy(r#"{"rules":[{"domain":"bad.com","action":"deny"}]}"#).unwrap();
        assert!(!block.denies_by_default());
        assert_eq!(block.decide("bad.com"), Verdict::Deny);
        assert_eq!(block.decide("good.com"), Verdict::Allow);
    }

    #[test]
    fn bad_rules_say_why() {
        for (doc, want) in [
            (r#"{}"#, "rules"),
            (r#"{"rules":{}}"#, "must be an array"),
            (r#"{"rules":[{"domain":"a.com"}]}"#, "either"),
            (r#"{"rules":[{"action":"allow"}]}"#, "either"),
            (
                r#"{"rules":[{"domain":"a.com","action":"allow","include":"defaults"}]}"#,
                "either",
            ),
            (
                r#"{"rules":[{"domain":"a.com","action":"permit"}]}"#,
                "action",
            ),
            (
                r#"{"rules":[{"domain":"a*.com","action":"allow"}]}"#,
                "malformed wildcard",
            ),
            (
                r#"{"rules":[{"domain":"*.*.com","action":"allow"}]}"#,
                "malformed wildcard",
            ),
            (
                r#"{"rules":[{"domain":"*.","action":"allow"}]}"#,
                "malformed wildcard",
            ),
            (
                r#"{"rules":[{"domain":"**","action":"allow"}]}"#,
                "malformed wildcard",
            ),
            (
                r#"{"rules":[{"domain":"a..com","action":"allow"}]}"#,
                "invalid domain",
            ),
            (
                r#"{"rules":[{"domain":"","action":"allow"}]}"#,
                "invalid domain",
            ),
            (
                r#"{"rules":[{"domain":"a b.com","action":"allow"}]}"#,
                "invalid domain",
            ),
            (r#"{"rules":[{"domain":7,"action":"allow"}]}"#, "string"),
            (r#"{"rules":[{"include":"everything"}]}"#, "unknown include"),
            (r#"{"rules":["a.com"]}"#, "object"),
        ] {
            let err = policy(doc).unwrap_err();
            assert!(err.contains(want), "{doc}: {err}");
        }
        // Names: 253 characters at most, `-` and `_` inside labels, not at a label's ends.
        let rule = |d: &str| format!(r#"{{"rules":[{{"domain":"{d}","action":"allow"}}]}}"#);
        let long = |len: usize| {
            let mut labels = vec!["a".repeat(63); 3];
            labels.push("b".repeat(len - 3 * 64));
            labels.join(".")
        };
        assert_eq!(long(253).len(), 253);
        assert!(policy(&rule(&long(253))).is_ok());
        assert!(policy(&rule(&long(254))).is_err());
        assert!(policy(&rule("_dmarc.my-site.com")).is_ok());
        for bad in ["-a.com", "a-.com", "a.-b.com"] {
            assert!(
                policy(&rule(bad)).unwrap_err().contains("starts or ends"),
                "{bad}"
            );
        }
        let label = "a".repeat(63);
        assert!(policy(&format!(
            r#"{{"rules":[{{"domain":"{label}.com","action":"allow"}}]}}"#
        ))
        .is_ok());
        let label = "a".repeat(64);
        assert!(policy(&format!(
            r#"{{"rules":[{{"domain":"{label}.com","action":"allow"}}]}}"#
        ))
        .is_err());
        let many: Vec<String> = (0..=MAX_RULES)
            .map(|i| format!(r#"{{"domain":"d{i}.com","action":"allow"}}"#))
            .collect();
        assert!(policy(&format!(r#"{{"rules":[{}]}}"#, many[1..].join(","))).is_ok());
        assert!(policy(&format!(r#"{{"rules":[{}]}}"#, many.join(","))).is_err());
    }
}
