//! The proxy's init message (PROTOCOL.md §10.2) and the answers to it (§10.3).

use std::io;

use serde_json::Value;

/// Longest `host` accepted: a DNS name is at most 253 characters; an IPv6 literal with a
/// zone and brackets is shorter.
pub const MAX_HOST: usize = 253;

/// What the client asked to be connected to.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    /// A name or an IP literal (an IPv6 literal without its brackets).
    pub host: String,
    /// 1–65535.
    pub port: u16,
    /// The client understands half-close: an empty binary frame is the end of one
    /// direction (§10.4), and the server keeps the tunnel open until both have ended.
    pub half_close: bool,
}

impl Target {
    /// `host:port` as the reply's `target` shows it (`[v6]:port` for IPv6).
    pub fn display(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Parses the init message: `{"host": "localhost", "port": 5432}` (`host` optional,
/// default `localhost`; `port` a number or a string of digits; `half_close` optional). The
/// error is the message for the client.
pub fn parse(text: &str) -> Result<Target, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("the init message is not JSON: {e}"))?;
    parse_value(&v)
}

/// Parses the target of a proxy operation on a control connection (§8.4): Go's `params`
/// object (`{"host","port","keep_alive"}`), or the `args` of an `op.start` as query pairs
/// (values are strings: `"port":"5432"`, `"half_close":"true"`).
pub fn parse_params(params: &Value) -> Result<Target, String> {
    parse_value(params)
}

/// [`parse_params`] for `op.start` args (strings).
pub fn parse_args(args: &crate::net::query::Query) -> Result<Target, String> {
    let mut obj = serde_json::Map::new();
    for key in ["host", "port"] {
        if let Some(v) = args.get(key) {
            obj.insert(key.into(), Value::String(v.to_owned()));
        }
    }
    if let Some(v) = args.get("half_close") {
        let v = match v {
            "true" | "1" => Value::Bool(true),
            "false" | "0" | "" => Value::Bool(false),
            other => Value::String(other.to_owned()),
        };
        obj.insert("half_close".into(), v);
    }
    parse_value(&Value::Object(obj))
}

fn parse_value(v: &Value) -> Result<Target, String> {
    let Value::Object(obj) = v else {
        return Err("the init message must be a JSON object".into());
    };
    let host = match obj.get("host") {
        None | Some(Value::Null) => "localhost".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("\"host\" must be a string".into()),
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .map(str::to_owned)
        .unwrap_or(host);
    if host.is_empty() {
        return Err("\"host\" is empty".into());
    }
    if host.len() > MAX_HOST {
        return Err(format!("\"host\" is longer than {MAX_HOST} bytes"));
    }
    if host
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || c == '/' || c == '@')
    {
        return Err(format!("\"host\" {host:?} is not a host name or address"));
    }
    let port = match obj.get("port") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        None | Some(Value::Null) => return Err("\"port\" is missing".into()),
        Some(_) => None,
    };
    let port = match port {
        Some(p @ 1..=65535) => p as u16,
        _ => return Err("\"port\" must be a number from 1 to 65535".into()),
    };
    let half_close = match obj.get("half_close") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err("\"half_close\" must be true or false".into()),
    };
    Ok(Target {
        host,
        port,
        half_close,
    })
}

/// `{"status":"connected","target":…,"peer":…,"half_close":…}`.
pub fn connected(target: &Target, peer: Option<std::net::SocketAddr>) -> String {
    let mut v = serde_json::json!({
        "status": "connected",
        "target": target.display(),
        "half_close": target.half_close,
    });
    if let Some(peer) = peer {
        v["peer"] = Value::String(peer.to_string());
    }
    v.to_string()
}

/// The machine-readable `code` of a failure (§10.3).
pub fn error_code(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection_refused",
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed_out",
        io::ErrorKind::NotFound => "host_not_found",
        io::ErrorKind::InvalidInput => "invalid_request",
        _ => match e.raw_os_error() {
            Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EADDRNOTAVAIL) => "unreachable",
            _ => "connect_failed",
        },
    }
}

/// `{"status":"error","error":message,"code":code}`.
pub fn error(code: &str, message: &str) -> String {
    serde_json::json!({"status": "error", "error": message, "code": code}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(host: &str, port: u16, half_close: bool) -> Target {
        Target {
            host: host.into(),
            port,
            half_close,
        }
    }

    #[test]
    fn init_messages() {
        assert_eq!(
            parse(r#"{"host":"localhost","port":5432}"#),
            Ok(t("localhost", 5432, false))
        );
        assert_eq!(parse(r#"{"port":80}"#), Ok(t("localhost", 80, false)));
        assert_eq!(
            parse(r#"{"host":"fdf::1","port":"22","half_close":true}"#),
            Ok(t("fdf::1", 22, true))
        );
        assert_eq!(
            parse(r#"{"host":"[::1]","port":1}"#),
            Ok(t("::1", 1, false))
        );
        assert_eq!(parse(r#"{"port":65535}"#).unwrap().port, 65535);
        for bad in [
            "",
            "nope",
            "[]",
            r#"{"host":"x"}"#,
            r#"{"port":0}"#,
            r#"{"port":65536}"#,
            r#"{"port":-1}"#,
            r#"{"port":1.5}"#,
            r#"{"port":"http"}"#,
            r#"{"port":true}"#,
            r#"{"host":5,"port":1}"#,
            r#"{"host":"","port":1}"#,
            r#"{"host":"a b","port":1}"#,
            r#"{"host":"a\n","port":1}"#,
            r#"{"host":"u@h","port":1}"#,
            r#"{"port":1,"half_close":"yes"}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let long = format!(r#"{{"host":"{}","port":1}}"#, "a".repeat(MAX_HOST));
        assert!(parse(&long).is_ok());
        let longer = format!(r#"{{"host":"{}","port":1}}"#, "a".repeat(MAX_HOST + 1));
        assert!(parse(&longer).is_err());
    }

    #[test]
    fn control_op_targets() {
        // Go's params: a number port, keep_alive ignored.
        let go = serde_json::json!({"host":"localhost","port":5432,"keep_alive":true});
        assert_eq!(parse_params(&go), Ok(t("localhost", 5432, false)));
        assert!(parse_params(&Value::Null).is_err());
        assert!(parse_params(&serde_json::json!({"port":0})).is_err());
        // op.start args: strings.
        let args = |pairs: &[(&str, &str)]| {
            crate::net::query::Query::from_pairs(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            )
        };
        assert_eq!(
            parse_args(&args(&[
                ("host", "::1"),
                ("port", "22"),
                ("half_close", "true")
            ])),
            Ok(t("::1", 22, true))
        );
        assert_eq!(
            parse_args(&args(&[("port", "80"), ("half_close", "false")])),
            Ok(t("localhost", 80, false))
        );
        assert!(parse_args(&args(&[("port", "80"), ("half_close", "yes")])).is_err());
        assert!(parse_args(&args(&[("host", "x")])).is_err());
        assert!(parse_args(&args(&[("port", "65536")])).is_err());
    }

    #[test]
    fn replies() {
        let v: Value = serde_json::from_str(&connected(
            &t("::1", 5, true),
            Some("[::1]:5".parse().unwrap()),
        ))
        .unwrap();
        assert_eq!(v["status"], "connected");
        assert_eq!(v["target"], "[::1]:5");
        assert_eq!(v["peer"], "[::1]:5");
        assert_eq!(v["half_close"], true);
        let v: Value =
            serde_json::from_str(&connected(&t("localhost", 5432, false), None)).unwrap();
        assert_eq!(v["target"], "localhost:5432");
        assert!(v.get("peer").is_none());
        let v: Value = serde_json::from_str(&error("connection_refused", "refused")).unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["error"], "refused");
        assert_eq!(v["code"], "connection_refused");
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(error_code(&refused), "connection_refused");
        // Each kind the connect can fail with keeps its own code (mutants survivors).
        for (kind, code) in [
            (io::ErrorKind::TimedOut, "timed_out"),
            (io::ErrorKind::WouldBlock, "timed_out"),
            (io::ErrorKind::NotFound, "host_not_found"),
            (io::ErrorKind::InvalidInput, "invalid_request"),
        ] {
            assert_eq!(error_code(&io::Error::from(kind)), code, "{kind:?}");
        }
        assert_eq!(
            error_code(&io::Error::from_raw_os_error(libc::ENETUNREACH)),
            "unreachable"
        );
        assert_eq!(error_code(&io::Error::other("x")), "connect_failed");
    }
}
