//! Service definitions: what a client may `PUT` (PROTOCOL.md §11), how it is validated, and
//! how a sprite's definitions and desired states are persisted in `services.json` in the
//! sprite's directory on the host — outside the sprite's own tree, so nothing running in
//! the sprite can rewrite what the server will start.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Most services one sprite may define (each running one costs four server threads).
pub const MAX_SERVICES: usize = 16;
/// Most arguments, environment entries or needs in one definition.
const MAX_LIST: usize = 256;
/// Most bytes in one definition's strings together.
const MAX_BYTES: usize = 64 * 1024;
/// The file, in the sprite's directory, holding its services.
const FILE: &str = "services.json";

/// One service as stored and as sent on the wire (without its `state`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDef {
    /// The service's name (the path segment it was created under).
    pub name: String,
    /// The executable, looked up in `PATH`.
    pub cmd: String,
    /// Its arguments (without `argv[0]`).
    #[serde(default)]
    pub args: Vec<String>,
    /// Services that must be started before this one.
    #[serde(default)]
    pub needs: Vec<String>,
    /// The port its HTTP server listens on (at most one service per sprite has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u16>,
    /// Environment additions (after the sprite's own environment).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the home directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

/// A `PUT` body. Every field but `cmd` may be absent or `null`; unknown fields (a `name`
/// some clients repeat) are ignored.
#[derive(Debug, Deserialize)]
struct PutBody {
    cmd: Option<String>,
    args: Option<Vec<String>>,
    needs: Option<Vec<String>>,
    http_port: Option<i64>,
    env: Option<BTreeMap<String, String>>,
    dir: Option<String>,
}

/// Whether `name` may name a service: 1–63 of `A-Z a-z 0-9 . _ -`, starting with a letter
/// or digit (it becomes a log file name inside the sprite, so no `/` and no dot files).
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// Parses and validates a `PUT` body for service `name`; `others` are the sprite's other
/// services (as they stay). The error is the 400 message.
pub fn parse_put(name: &str, body: &[u8], others: &[&ServiceDef]) -> Result<ServiceDef, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    if !value.is_object() {
        return Err("request body must be a JSON object".into());
    }
    let b: PutBody =
        serde_json::from_value(value).map_err(|e| format!("invalid request body: {e}"))?;
    let cmd = b.cmd.unwrap_or_default();
    if cmd.trim().is_empty() {
        return Err("cmd is required (the executable to run)".into());
    }
    let http_port = match b.http_port {
        None => None,
        Some(p) if (1..=65535).contains(&p) => Some(p as u16),
        Some(p) => return Err(format!("http_port {p} is not a port (1-65535)")),
    };
    let def = ServiceDef {
        name: name.to_owned(),
        cmd,
        args: b.args.unwrap_or_default(),
        needs: b.needs.unwrap_or_default(),
        http_port,
        env: b.env.unwrap_or_default(),
        dir: b.dir.filter(|d| !d.is_empty()),
    };
    validate(&def, others)?;
    Ok(def)
}

fn validate(def: &ServiceDef, others: &[&ServiceDef]) -> Result<(), String> {
    if def.args.len() > MAX_LIST || def.env.len() > MAX_LIST || def.needs.len() > MAX_LIST {
        return Err(format!("at most {MAX_LIST} args, env entries and needs"));
    }
    let strings = std::iter::once(&def.cmd)
        .chain(&def.args)
        .chain(def.env.iter().flat_map(|(k, v)| [k, v]))
        .chain(def.dir.iter());
    let mut total = 0;
    for s in strings {
        if s.contains('\0') {
            return Err("cmd, args, env and dir may not contain NUL bytes".into());
        }
        total += s.len();
    }
    if total > MAX_BYTES {
        return Err(format!("definition larger than {MAX_BYTES} bytes"));
    }
    if let Some(k) = def.env.keys().find(|k| k.is_empty() || k.contains('=')) {
        return Err(format!("env name {k:?} is empty or contains '='"));
    }
    for need in &def.needs {
        if need == &def.name {
            return Err(format!("service {:?} cannot need itself", def.name));
        }
        if !others.iter().any(|o| &o.name == need) {
            return Err(format!("needs unknown service {need:?}"));
        }
    }
    // A cycle through this service: some service it (transitively) needs needs it back.
    let mut stack: Vec<&str> = def.needs.iter().map(String::as_str).collect();
    let mut seen: Vec<&str> = Vec::new();
    while let Some(n) = stack.pop() {
        if n == def.name {
            return Err(format!("needs of {:?} form a cycle", def.name));
        }
        if seen.contains(&n) {
            continue;
        }
        seen.push(n);
        if let Some(o) = others.iter().find(|o| o.name == n) {
            stack.extend(o.needs.iter().map(String::as_str));
        }
    }
    Ok(())
}

/// `defs` ordered so that every service comes after the services it needs (needs that
/// name no defined service are ignored; definitions are validated acyclic).
pub fn needs_order<'a>(defs: &[&'a ServiceDef]) -> Vec<&'a ServiceDef> {
    let mut out: Vec<&ServiceDef> = Vec::with_capacity(defs.len());
    // Each pass places every service whose needs are placed; a cycle (only from a hand-
    // edited file) ends the loop and the rest follow in name order.
    while out.len() < defs.len() {
        let before = out.len();
        for d in defs {
            let placed = |n: &str| out.iter().any(|o| o.name == n);
            if placed(&d.name) {
                continue;
            }
            let ready = d
                .needs
                .iter()
                .all(|n| placed(n) || !defs.iter().any(|x| &x.name == n));
            if ready {
                out.push(d);
            }
        }
        if out.len() == before {
            for d in defs {
                if !out.iter().any(|o| o.name == d.name) {
                    out.push(d);
                }
            }
        }
    }
    out
}

/// One stored service: its definition and whether it should be running.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    /// The definition.
    #[serde(flatten)]
    pub def: ServiceDef,
    /// False once stopped by a client: a stop is sticky across server restarts.
    pub want_running: bool,
}

#[derive(Serialize, Deserialize, Default)]
struct File {
    services: Vec<Stored>,
}

/// The services stored for the sprite at `sprite_dir` (none when the file is absent).
pub fn load(sprite_dir: &Path) -> io::Result<Vec<Stored>> {
    match std::fs::read(sprite_dir.join(FILE)) {
        Ok(bytes) => serde_json::from_slice::<File>(&bytes)
            .map(|f| f.services)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Persists `services` for the sprite at `sprite_dir` (atomically: old or new, never a mix).
pub fn save(sprite_dir: &Path, services: Vec<Stored>) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(&File { services }).map_err(io::Error::other)?;
    crate::store::write_atomic(sprite_dir, FILE, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, needs: &[&str]) -> ServiceDef {
        ServiceDef {
            name: name.into(),
            cmd: "true".into(),
            args: vec![],
            needs: needs.iter().map(|s| s.to_string()).collect(),
            http_port: None,
            env: BTreeMap::new(),
            dir: None,
        }
    }

    #[test]
    fn names() {
        assert!(valid_name("web"));
        assert!(valid_name("a.b_c-1"));
        assert!(!valid_name(""));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(&"a".repeat(64)));
        assert!(valid_name(&"a".repeat(63)));
    }

    #[test]
    fn put_bodies() {
        let d = parse_put(
            "web",
            br#"{"cmd":"python3","args":["-m","http.server"],"http_port":3000,"env":{"A":"1"},"dir":"/app","name":"web"}"#,
            &[],
        )
        .unwrap();
        assert_eq!(d.http_port, Some(3000));
        assert_eq!(d.env["A"], "1");
        assert_eq!(d.dir.as_deref(), Some("/app"));
        let nulls = parse_put("w", br#"{"cmd":"x","args":null,"http_port":null}"#, &[]).unwrap();
        assert_eq!(nulls.args, Vec::<String>::new());
        for (body, why) in [
            (&br#"{}"#[..], "cmd is required"),
            (br#"{"cmd":""}"#, "cmd is required"),
            (br#"[]"#, "JSON object"),
            (br#"{"cmd":"x","http_port":0}"#, "not a port"),
            (br#"{"cmd":"x","http_port":65536}"#, "not a port"),
            (br#"{"cmd":"x","args":"y"}"#, "invalid request body"),
            (br#"{"cmd":"x","env":{"A=B":"1"}}"#, "contains '='"),
            (br#"{"cmd":"a\u0000b"}"#, "NUL"),
            (br#"{"cmd":"x","needs":["w"]}"#, "itself"),
            (br#"{"cmd":"x","needs":["nope"]}"#, "unknown service"),
            (b"{", "not valid JSON"),
        ] {
            let e = parse_put("w", body, &[]).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        let ok = parse_put("w", br#"{"cmd":"x","http_port":65535}"#, &[]).unwrap();
        assert_eq!(ok.http_port, Some(65535));
    }

    #[test]
    fn cycles_are_refused() {
        let a = def("a", &["b"]);
        let b = def("b", &["c"]);
        let c = def("c", &[]);
        assert!(parse_put("c", br#"{"cmd":"x","needs":["a"]}"#, &[&a, &b])
            .unwrap_err()
            .contains("cycle"));
        assert!(parse_put("d", br#"{"cmd":"x","needs":["a"]}"#, &[&a, &b, &c]).is_ok());
    }

    #[test]
    fn needs_come_first() {
        let a = def("a", &["b", "c"]);
        let b = def("b", &["c"]);
        let c = def("c", &[]);
        let d = def("d", &["ghost"]);
        let order: Vec<_> = needs_order(&[&a, &b, &c, &d])
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        let at = |n: &str| order.iter().position(|o| *o == n).unwrap();
        assert_eq!(order.len(), 4);
        assert!(at("c") < at("b") && at("b") < at("a"), "{order:?}");
        // A (hand-made) cycle still yields every service once.
        let x = def("x", &["y"]);
        let y = def("y", &["x"]);
        assert_eq!(needs_order(&[&x, &y]).len(), 2);
    }

    #[test]
    fn store_round_trip() {
        let dir = std::env::temp_dir().join(format!("svc-def-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(load(&dir).unwrap().is_empty());
        let s = Stored {
            def: def("a", &[]),
            want_running: false,
        };
        save(&dir, vec![s.clone()]).unwrap();
        let back = load(&dir).unwrap();
        assert_eq!(back[0].def, s.def);
        assert!(!back[0].want_running);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
