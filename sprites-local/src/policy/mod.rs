//! A sprite's policies (PROTOCOL.md §13): network, privileges, resources.
//!
//! - this module: the three documents as the wire carries them, their validation (what is
//!   a 400) and where they are kept (files in the sprite's directory);
//! - [`network`]: the network policy's rules and the decision they make for a name;
//! - [`dns`]: a small DNS message codec (only what a filtering forwarder needs);
//! - [`resolver`]: the per-sprite resolver that enforces the network policy.
//!
//! What is enforced, and where, is decided by the runtime (`SpriteRuntime::policy_note`);
//! this module only knows the documents.

pub(crate) mod dns;
pub(crate) mod firewall;
pub(crate) mod network;
pub(crate) mod resolver;

use std::io;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

pub(crate) use network::NetworkPolicy;

/// The directory, inside a sprite's directory, that holds `network.json`; the sandbox
/// shows it read-only inside the sprite at [`VISIBLE_DIR`].
pub(crate) const NETWORK_DIR: &str = "policy";
/// Where the network policy is visible inside a sprite.
pub(crate) const VISIBLE_DIR: &str = ".sprite/policy";
const NETWORK_FILE: &str = "network.json";
const PRIVILEGES_FILE: &str = "privileges.json";
const RESOURCES_FILE: &str = "resources.json";

/// The three policy kinds of `/v1/sprites/{name}/policy/{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `network`: DNS rules.
    Network,
    /// `privileges`: what the sprite's processes may do.
    Privileges,
    /// `resources`: memory.
    Resources,
}

impl Kind {
    /// The kind named by a path segment.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "network" => Some(Kind::Network),
            "privileges" => Some(Kind::Privileges),
            "resources" => Some(Kind::Resources),
            _ => None,
        }
    }

    fn path(self, sprite_dir: &Path) -> PathBuf {
        match self {
            Kind::Network => sprite_dir.join(NETWORK_DIR).join(NETWORK_FILE),
            Kind::Privileges => sprite_dir.join(PRIVILEGES_FILE),
            Kind::Resources => sprite_dir.join(RESOURCES_FILE),
        }
    }

    /// The document a sprite has before anyone set one.
    pub fn default_document(self) -> Value {
        match self {
            Kind::Network => serde_json::json!({ "rules": [] }),
            Kind::Privileges => serde_json::json!({ "profile": "" }),
            Kind::Resources => serde_json::json!({}),
        }
    }

    /// Checks a request body and returns the document to store (normalised), or the
    /// message of the 400.
    pub fn validate(self, body: &[u8]) -> Result<Value, String> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
        let Value::Object(obj) = v else {
            return Err("body must be a JSON object".into());
        };
        match self {
            Kind::Network => NetworkPolicy::from_document(&obj).map(|p| p.to_document()),
            Kind::Privileges => Privileges::from_document(&obj).map(|p| to_value(&p)),
            Kind::Resources => Resources::from_document(&obj).map(|r| to_value(&r)),
        }
    }
}

fn to_value<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// The stored document of `kind` for the sprite at `sprite_dir`, or its default. A file
/// that cannot be parsed (it never is written that way) reads as the default.
pub(crate) fn load(sprite_dir: &Path, kind: Kind) -> Value {
    std::fs::read(kind.path(sprite_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| kind.default_document())
}

/// Stores `doc` (already validated) as the sprite's `kind` policy, atomically.
pub(crate) fn store(sprite_dir: &Path, kind: Kind, doc: &Value) -> io::Result<()> {
    let path = kind.path(sprite_dir);
    let dir = path.parent().unwrap_or(sprite_dir);
    std::fs::create_dir_all(dir)?;
    let mut bytes = serde_json::to_vec_pretty(doc).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("policy");
    crate::store::write_atomic(dir, name, &bytes)?;
    // Readable by the sprite's processes through the read-only mount (they are not the
    // host's root).
    if kind == Kind::Network {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

/// Removes the sprite's `kind` policy: it is back to the default.
pub(crate) fn reset(sprite_dir: &Path, kind: Kind) -> io::Result<()> {
    if kind == Kind::Network {
        // The file stays (the sprite sees it), with the default content.
        return store(sprite_dir, kind, &kind.default_document());
    }
    match std::fs::remove_file(kind.path(sprite_dir)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes sure the network policy file exists (with the default), so the directory the
/// sandbox shows inside the sprite is never empty.
pub(crate) fn ensure_network_file(sprite_dir: &Path) -> io::Result<PathBuf> {
    let path = Kind::Network.path(sprite_dir);
    if !path.exists() {
        store(sprite_dir, Kind::Network, &Kind::Network.default_document())?;
    }
    Ok(sprite_dir.join(NETWORK_DIR))
}

/// The network policy in force for the sprite at `sprite_dir`.
pub(crate) fn network(sprite_dir: &Path) -> NetworkPolicy {
    match load(sprite_dir, Kind::Network) {
        Value::Object(obj) => NetworkPolicy::from_document(&obj).unwrap_or_default(),
        _ => NetworkPolicy::default(),
    }
}

/// The privileges policy (`GET/POST /policy/privileges`, JS 0.1.0).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Privileges {
    /// `""` (unset), `minimal`, `standard` or `privileged`.
    pub profile: String,
    /// Device paths asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<String>>,
    /// The Linux no-new-privileges flag on every new process.
    #[serde(rename = "noNewPrivileges", skip_serializing_if = "Option::is_none")]
    pub no_new_privileges: Option<bool>,
}

/// Privilege profiles accepted (`""` = the default).
const PROFILES: [&str; 4] = ["", "minimal", "standard", "privileged"];

impl Privileges {
    fn from_document(obj: &Map<String, Value>) -> Result<Privileges, String> {
        let mut p = Privileges::default();
        if let Some(v) = obj.get("profile") {
            match v {
                Value::Null => {}
                Value::String(s) if PROFILES.contains(&s.as_str()) => p.profile = s.clone(),
                other => {
                    return Err(format!(
                        "profile must be one of \"\", \"minimal\", \"standard\", \"privileged\"; \
                         got {other}"
                    ))
                }
            }
        }
        if let Some(v) = obj.get("devices").filter(|v| !v.is_null()) {
            let Some(list) = v.as_array() else {
                return Err("devices must be an array of device paths".into());
            };
            if list.len() > 64 {
                return Err("devices: at most 64 entries".into());
            }
            let mut devices = Vec::new();
            for d in list {
                let Some(s) = d.as_str() else {
                    return Err(format!("devices: {d} is not a string"));
                };
                let ok = s.len() <= 255
                    && s.strip_prefix("/dev/").is_some_and(|rest| {
                        !rest.is_empty()
                            && rest
                                .split('/')
                                .all(|c| !c.is_empty() && c != "." && c != "..")
                    });
                if !ok {
                    return Err(format!(
                        "devices: {s:?} is not a device path (an absolute path under /dev/)"
                    ));
                }
                devices.push(s.to_owned());
            }
            p.devices = Some(devices);
        }
        // JS 0.1.0 sends the SDK's own camelCase name; accept the snake_case spelling too.
        for key in ["noNewPrivileges", "no_new_privileges"] {
            match obj.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Bool(b)) => p.no_new_privileges = Some(*b),
                Some(other) => return Err(format!("{key} must be true or false, got {other}")),
            }
        }
        Ok(p)
    }

    /// Whether new processes get `PR_SET_NO_NEW_PRIVS` (asked for, or the `minimal`
    /// profile).
    pub fn no_new_privs(&self) -> bool {
        self.no_new_privileges == Some(true) || self.profile == "minimal"
    }
}

/// The privileges policy in force for the sprite at `sprite_dir`.
pub(crate) fn privileges(sprite_dir: &Path) -> Privileges {
    match load(sprite_dir, Kind::Privileges) {
        Value::Object(obj) => Privileges::from_document(&obj).unwrap_or_default(),
        _ => Privileges::default(),
    }
}

/// The resources policy (`GET/POST /policy/resources`, JS 0.1.0).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Resources {
    /// Memory settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
}

/// `resources.memory`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Memory {
    /// The limit in MiB (`limit_mb` on the wire; `limitMB` is only the JS SDK's name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_mb: Option<u64>,
    /// Whether the platform scales memory itself.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<bool>,
}

/// Smallest and largest `memory.limit_mb` accepted (a process needs a few MiB to start;
/// 1 TiB is far above any sprite).
pub(crate) const MIN_LIMIT_MB: u64 = 16;
/// See [`MIN_LIMIT_MB`].
pub(crate) const MAX_LIMIT_MB: u64 = 1 << 20;

impl Resources {
    fn from_document(obj: &Map<String, Value>) -> Result<Resources, String> {
        let Some(mem) = obj.get("memory").filter(|v| !v.is_null()) else {
            return Ok(Resources::default());
        };
        let Some(mem) = mem.as_object() else {
            return Err("memory must be an object".into());
        };
        let mut m = Memory::default();
        for key in ["limit_mb", "limitMB"] {
            match mem.get(key) {
                None | Some(Value::Null) => {}
                Some(v) => match v.as_u64() {
                    Some(n) if (MIN_LIMIT_MB..=MAX_LIMIT_MB).contains(&n) => m.limit_mb = Some(n),
                    _ => {
                        return Err(format!(
                            "memory.limit_mb must be an integer from {MIN_LIMIT_MB} to \
                             {MAX_LIMIT_MB}, got {v}"
                        ))
                    }
                },
            }
        }
        match mem.get("autoscale") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(b)) => m.autoscale = Some(*b),
            Some(other) => return Err(format!("memory.autoscale must be a boolean, got {other}")),
        }
        Ok(Resources { memory: Some(m) })
    }

    /// The memory limit in bytes, if one is set.
    pub fn limit_bytes(&self) -> Option<u64> {
        self.memory
            .as_ref()?
            .limit_mb
            .map(|mb| mb.saturating_mul(1 << 20))
    }
}

/// The resources policy in force for the sprite at `sprite_dir`.
pub(crate) fn resources(sprite_dir: &Path) -> Resources {
    match load(sprite_dir, Kind::Resources) {
        Value::Object(obj) => Resources::from_document(&obj).unwrap_or_default(),
        _ => Resources::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_validate_and_normalise() {
        let ok = Kind::Privileges
            .validate(br#"{"profile":"minimal","devices":["/dev/fuse"],"no_new_privileges":true}"#)
            .unwrap();
        assert_eq!(
            ok,
            serde_json::json!({"profile":"minimal","devices":["/dev/fuse"],"noNewPrivileges":true})
        );
        for bad in [
            r#"{"profile":"root"}"#,
            r#"{"devices":"/dev/fuse"}"#,
            r#"{"devices":["/etc/passwd"]}"#,
            r#"{"devices":["/dev/../etc"]}"#,
            r#"{"devices":["/dev/"]}"#,
            r#"{"noNewPrivileges":"yes"}"#,
            r#"[]"#,
            r#"{"#,
        ] {
            assert!(Kind::Privileges.validate(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(Privileges::from_document(&Map::new()).unwrap() == Privileges::default());
    }

    #[test]
    fn resources_validate_at_the_boundaries() {
        let v = Kind::Resources
            .validate(br#"{"memory":{"limit_mb":16,"autoscale":false}}"#)
            .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"memory":{"limit_mb":16,"autoscale":false}})
        );
        assert!(Kind::Resources
            .validate(br#"{"memory":{"limit_mb":15}}"#)
            .is_err());
        assert!(Kind::Resources
            .validate(format!(r#"{{"memory":{{"limit_mb":{}}}}}"#, MAX_LIMIT_MB).as_bytes())
            .is_ok());
        assert!(Kind::Resources
            .validate(format!(r#"{{"memory":{{"limit_mb":{}}}}}"#, MAX_LIMIT_MB + 1).as_bytes())
            .is_err());
        assert!(Kind::Resources
            .validate(br#"{"memory":{"limit_mb":-1}}"#)
            .is_err());
        assert!(Kind::Resources
            .validate(br#"{"memory":{"autoscale":1}}"#)
            .is_err());
        assert!(Kind::Resources.validate(br#"{"memory":5}"#).is_err());
        assert_eq!(
            Kind::Resources.validate(b"{}").unwrap(),
            serde_json::json!({})
        );
    }
}
