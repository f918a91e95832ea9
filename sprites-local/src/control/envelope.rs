//! The control envelope (PROTOCOL.md §8.2): which client text frames start or end an
//! operation, and the `op.complete` / `op.error` messages the server ends one with.
//!
//! Three client dialects exist (§17 items 12–14): JS and Python send
//! `control:{"type":"op.start","op":"exec","args":{…}}` with `args` an object of strings and
//! string arrays; Go's filesystem calls send the same message **unprefixed** with `args` a
//! URL-encoded string, and Go sends an unprefixed `{"type":"release"}` after each op. All
//! are accepted here; an op started unprefixed is also ended unprefixed (Go parses the
//! filesystem ops' end that way), except a proxy op, whose end is always prefixed (§8.4).
//! Go's proxy start has a shape of its own: `{"type":"start","operation":"proxy",…}`.

use serde_json::{json, Map, Value};

use crate::net::query::Query;

/// The 8 bytes that mark a text frame as an envelope message.
pub const PREFIX: &str = "control:";

/// What a client text frame means to the control connection.
#[derive(Debug, PartialEq)]
pub enum ClientText {
    /// `op.start`: run `op` with `args` (keyed like the exec query, §6.1, or the filesystem
    /// query, §9). `prefixed` = it came behind `control:`.
    Start {
        op: String,
        args: Query,
        prefixed: bool,
    },
    /// An `op.start` whose `args` could not be read: the op fails with this message.
    BadStart { message: String, prefixed: bool },
    /// `release` (Go): the client is done with the op; nothing to do.
    Release,
    /// Go's start (`{"type":"start","operation":"proxy","params":{…}}`, §8.4): `operation`
    /// and `params` (Null when absent).
    GoStart { operation: String, params: Value },
    /// Some other envelope message (a `keepalive`, say): ignored.
    OtherEnvelope,
    /// Not an envelope message: operation data (a signal or resize of the running exec).
    Data,
}

/// Classifies one client text frame.
pub fn parse(text: &str) -> ClientText {
    let (body, prefixed) = match text.strip_prefix(PREFIX) {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    let value: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) if prefixed => {
            return ClientText::BadStart {
                message: format!("invalid control message: {e}"),
                prefixed,
            }
        }
        Err(_) => return ClientText::Data,
    };
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "op.start" => match start(&value) {
            Ok((op, args)) => ClientText::Start { op, args, prefixed },
            Err(message) => ClientText::BadStart { message, prefixed },
        },
        "release" => ClientText::Release,
        "start" if !prefixed && value.get("operation").is_some() => ClientText::GoStart {
            operation: match value.get("operation") {
                Some(Value::String(op)) => op.clone(),
                Some(other) => other.to_string(),
                None => String::new(),
            },
            params: value.get("params").cloned().unwrap_or(Value::Null),
        },
        _ if prefixed => ClientText::OtherEnvelope,
        _ => ClientText::Data,
    }
}

/// The op name and its args of an `op.start`.
fn start(value: &Value) -> Result<(String, Query), String> {
    let op = value
        .get("op")
        .and_then(Value::as_str)
        .filter(|op| !op.is_empty())
        .ok_or("op.start needs an \"op\" string")?
        .to_owned();
    let args = match value.get("args") {
        None | Some(Value::Null) => Query::default(),
        Some(Value::String(s)) => {
            Query::parse(s).map_err(|e| format!("invalid args of {op}: {}", e.0))?
        }
        Some(Value::Object(map)) => {
            object_args(map).map_err(|e| format!("invalid args of {op}: {e}"))?
        }
        Some(_) => {
            return Err(format!(
                "the args of {op} must be an object or a query string"
            ))
        }
    };
    Ok((op, args))
}

/// `{"cmd":["ls","-la"],"tty":"true"}` as query pairs: strings and arrays of strings, in
/// order; booleans and numbers are taken as their text (lenient: `"tty": true`).
fn object_args(map: &Map<String, Value>) -> Result<Query, String> {
    let mut pairs = Vec::new();
    for (key, value) in map {
        match value {
            Value::Array(items) => {
                for item in items {
                    pairs.push((key.clone(), scalar(key, item)?));
                }
            }
            Value::Null => {}
            other => pairs.push((key.clone(), scalar(key, other)?)),
        }
    }
    Ok(Query::from_pairs(pairs))
}

fn scalar(key: &str, value: &Value) -> Result<String, String> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(format!("{key} must be a string or an array of strings")),
    }
}

/// `op.complete`; `exit_code` for an exec (JS and Python read `args.exitCode` and take a
/// missing one as 0, so it is always there for an exec).
pub fn complete(exit_code: Option<u8>, prefixed: bool) -> String {
    let args = match exit_code {
        Some(code) => json!({ "exitCode": code, "ok": true }),
        None => json!({ "ok": true }),
    };
    envelope(json!({ "type": "op.complete", "args": args }), prefixed)
}

/// `op.error` with `args.error` = `message`, plus any `extra` fields (a filesystem error's
/// `code`, `path` and `status`).
pub fn error(message: &str, extra: Option<&Value>, prefixed: bool) -> String {
    let mut args = json!({ "error": message });
    if let (Some(Value::Object(extra)), Value::Object(args)) = (extra, &mut args) {
        for (k, v) in extra {
            if k != "error" {
                args.insert(k.clone(), v.clone());
            }
        }
    }
    envelope(json!({ "type": "op.error", "args": args }), prefixed)
}

fn envelope(value: Value, prefixed: bool) -> String {
    if prefixed {
        format!("{PREFIX}{value}")
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn js_and_python_exec_start() {
        let text = r#"control:{"type":"op.start","op":"exec","args":{"cmd":["ls","-la"],"env":["A=1"],"dir":"/tmp","tty":"true","rows":"24","stdin":true}}"#;
        let ClientText::Start { op, args, prefixed } = parse(text) else {
            panic!("not a start");
        };
        assert_eq!((op.as_str(), prefixed), ("exec", true));
        assert_eq!(args.get_all("cmd").collect::<Vec<_>>(), ["ls", "-la"]);
        assert_eq!(args.get("env"), Some("A=1"));
        assert_eq!(args.get("dir"), Some("/tmp"));
        assert_eq!(args.get("rows"), Some("24"));
        assert_eq!(args.get("stdin"), Some("true"));
        // Numbers and booleans as their text (Python sends `"tty": true`, `"rows": 24`).
        let text = r#"control:{"type":"op.start","op":"exec","args":{"cmd":["sh"],"tty":true,"rows":24,"env":null}}"#;
        let ClientText::Start { args, .. } = parse(text) else {
            panic!("not a start");
        };
        assert_eq!(
            (args.get("tty"), args.get("rows")),
            (Some("true"), Some("24"))
        );
        assert_eq!(args.get("env"), None);
    }

    #[test]
    fn go_filesystem_start_is_unprefixed_with_a_query_string() {
        let text = r#"{"type":"op.start","op":"fs.read","args":"path=notes.txt&workingDir=%2Fhome%2Fsprite&end=1024"}"#;
        let ClientText::Start { op, args, prefixed } = parse(text) else {
            panic!("not a start");
        };
        assert_eq!((op.as_str(), prefixed), ("fs.read", false));
        assert_eq!(args.get("workingDir"), Some("/home/sprite"));
        assert_eq!(args.get("end"), Some("1024"));
    }

    #[test]
    fn other_messages() {
        assert_eq!(parse(r#"{"type":"release"}"#), ClientText::Release);
        assert_eq!(parse(r#"control:{"type":"release"}"#), ClientText::Release);
        assert_eq!(
            parse(r#"control:{"type":"keepalive"}"#),
            ClientText::OtherEnvelope
        );
        assert_eq!(
            parse(r#"{"type":"start","operation":"proxy","params":{"host":"localhost","port":1}}"#),
            ClientText::GoStart {
                operation: "proxy".into(),
                params: json!({"host":"localhost","port":1})
            }
        );
        // Only Go's unprefixed start with an operation is a proxy start.
        assert_eq!(
            parse(r#"control:{"type":"start","operation":"proxy"}"#),
            ClientText::OtherEnvelope
        );
        assert_eq!(parse(r#"{"type":"start"}"#), ClientText::Data);
        assert_eq!(
            parse(r#"{"type":"signal","signal":"TERM"}"#),
            ClientText::Data
        );
        assert_eq!(parse("hello"), ClientText::Data);
        assert!(matches!(
            parse("control:{not json"),
            ClientText::BadStart { prefixed: true, .. }
        ));
        assert!(matches!(
            parse(r#"control:{"type":"op.start","args":{}}"#),
            ClientText::BadStart { .. }
        ));
        assert!(matches!(
            parse(r#"control:{"type":"op.start","op":"exec","args":{"cmd":[{"x":1}]}}"#),
            ClientText::BadStart { .. }
        ));
        assert!(matches!(
            parse(r#"control:{"type":"op.start","op":"exec","args":7}"#),
            ClientText::BadStart { .. }
        ));
    }

    #[test]
    fn endings() {
        let v: Value =
            serde_json::from_str(complete(Some(3), true).strip_prefix(PREFIX).unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"type":"op.complete","args":{"exitCode":3,"ok":true}})
        );
        let v: Value = serde_json::from_str(&complete(None, false)).unwrap();
        assert_eq!(v, json!({"type":"op.complete","args":{"ok":true}}));
        let extra = json!({"code":"ENOENT","path":"/x","error":"ignored"});
        let v: Value = serde_json::from_str(
            error("no such file or directory", Some(&extra), true)
                .strip_prefix(PREFIX)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"type":"op.error","args":{"error":"no such file or directory","code":"ENOENT","path":"/x"}})
        );
    }
}
