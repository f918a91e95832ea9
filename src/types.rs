//! Wire types of the management API ([PROTOCOL.md §5](crate::protocol#5-sprite-management)) and the exec socket's text messages ([PROTOCOL.md §6.4](crate::protocol#64-text-frames-from-the-server)).
//!
//! Every field the API may leave out is an `Option` or defaults to empty, because the live API
//! returns only a subset of what its docs describe. Timestamps are kept as the RFC 3339 strings the
//! server sent (with or without nanoseconds) rather than parsed, so no precision or format is lost.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the API knows about one sprite ([PROTOCOL.md §5.1](crate::protocol#51-spriteinfo)).
///
/// ```
/// let info: sprites::SpriteInfo = serde_json::from_str(r#"{"name":"web","status":"warm"}"#).unwrap();
/// assert_eq!(info.name, "web");
/// assert_eq!(info.status.as_deref(), Some("warm"));
/// assert!(info.labels.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SpriteInfo {
    /// Server-assigned id.
    #[serde(default)]
    pub id: Option<String>,
    /// The sprite's name, unique in its organization.
    pub name: String,
    /// Owning organization (`organization`, or `org_slug` in some list responses).
    #[serde(default, alias = "org_slug")]
    pub organization: Option<String>,
    /// Lifecycle status: `cold`, `warm` or `running`.
    #[serde(default)]
    pub status: Option<String>,
    /// Resources.
    #[serde(default)]
    pub config: Option<SpriteConfig>,
    /// Environment variables set on the sprite.
    #[serde(default)]
    pub environment: Option<BTreeMap<String, String>>,
    /// Creation time (RFC 3339).
    #[serde(default)]
    pub created_at: Option<String>,
    /// Last update time (RFC 3339).
    #[serde(default)]
    pub updated_at: Option<String>,
    /// Storage bucket (rarely returned).
    #[serde(default)]
    pub bucket_name: Option<String>,
    /// Primary region (rarely returned).
    #[serde(default)]
    pub primary_region: Option<String>,
    /// The sprite's public URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Who may reach the URL.
    #[serde(default)]
    pub url_settings: Option<UrlSettings>,
    /// Labels.
    #[serde(default, deserialize_with = "null_as_default")]
    pub labels: Vec<String>,
    /// When the sprite last ran.
    #[serde(default)]
    pub last_running_at: Option<String>,
    /// When the sprite last started warming.
    #[serde(default)]
    pub last_warming_at: Option<String>,
    /// Runtime version.
    #[serde(default)]
    pub version: Option<String>,
    /// Environment version.
    #[serde(default)]
    pub environment_version: Option<String>,
}

/// A sprite's resources (`config`); the platform may ignore requested values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SpriteConfig {
    /// Memory in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram_mb: Option<u64>,
    /// Virtual CPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// Region code, e.g. `ord`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Storage in GB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_gb: Option<u64>,
}

impl SpriteConfig {
    /// An empty config: every resource left to the platform.
    pub fn new() -> SpriteConfig {
        SpriteConfig::default()
    }
    /// Requests this much memory.
    pub fn ram_mb(mut self, ram_mb: u64) -> Self {
        self.ram_mb = Some(ram_mb);
        self
    }
    /// Requests this many CPUs.
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.cpus = Some(cpus);
        self
    }
    /// Requests a region.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }
    /// Requests this much storage.
    pub fn storage_gb(mut self, storage_gb: u64) -> Self {
        self.storage_gb = Some(storage_gb);
        self
    }
}

/// Who may reach a sprite's URL.
///
/// ```
/// let public = sprites::UrlSettings::public();
/// assert_eq!(serde_json::to_string(&public).unwrap(), r#"{"auth":"public"}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct UrlSettings {
    /// `sprite` (organization members; the default) or `public`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<String>,
    /// Grants URL access to non-admin members (format undocumented).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_access: Option<String>,
}

impl UrlSettings {
    /// Anyone may reach the URL.
    pub fn public() -> UrlSettings {
        UrlSettings {
            auth: Some("public".into()),
            private_access: None,
        }
    }
    /// Only organization members may reach the URL (the default).
    pub fn sprite() -> UrlSettings {
        UrlSettings {
            auth: Some("sprite".into()),
            private_access: None,
        }
    }
}

/// Organization-wide sprite counts sent with the first page of a list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OrgStats {
    /// Organization name.
    #[serde(default)]
    pub name: Option<String>,
    /// Sprites running now.
    #[serde(default)]
    pub running: Option<u64>,
    /// Sprites warm now.
    #[serde(default)]
    pub warm: Option<u64>,
    /// Sprites cold now.
    #[serde(default)]
    pub cold: Option<u64>,
    /// How many may run at once.
    #[serde(default)]
    pub running_limit: Option<u64>,
    /// How many may be warm at once.
    #[serde(default)]
    pub warm_limit: Option<u64>,
}

/// One page of [`Client::list_sprites`](crate::Client::list_sprites).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct SpritePage {
    /// The sprites on this page.
    #[serde(default, deserialize_with = "null_as_default")]
    pub sprites: Vec<SpriteInfo>,
    /// Whether another page follows.
    #[serde(default)]
    pub has_more: bool,
    /// Pass to [`ListOptions::continuation_token`](crate::ListOptions::continuation_token) for the next page.
    #[serde(default)]
    pub next_continuation_token: Option<String>,
    /// Organization counts (the `org` object, or the top-level counts some servers send).
    #[serde(default)]
    pub org: Option<OrgStats>,
    #[serde(default)]
    running: Option<u64>,
    #[serde(default)]
    warm: Option<u64>,
    #[serde(default)]
    cold: Option<u64>,
}

impl SpritePage {
    /// Organization counts, from `org` or else from the top-level `running`/`warm`/`cold`.
    pub fn stats(&self) -> Option<OrgStats> {
        if let Some(org) = &self.org {
            return Some(org.clone());
        }
        if self.running.is_none() && self.warm.is_none() && self.cold.is_none() {
            return None;
        }
        Some(OrgStats {
            running: self.running,
            warm: self.warm,
            cold: self.cold,
            ..OrgStats::default()
        })
    }

    /// The token for the next page, or `None` at the end (no more pages or no usable token).
    pub fn next_token(&self) -> Option<&str> {
        match self.next_continuation_token.as_deref() {
            Some(token) if self.has_more && !token.is_empty() => Some(token),
            _ => None,
        }
    }
}

/// A text message the server sent on an exec socket ([PROTOCOL.md §6.4](crate::protocol#64-text-frames-from-the-server)).
///
/// ```
/// use sprites::ServerMessage;
/// let msg = ServerMessage::parse(r#"{"type":"port_opened","port":3000,"address":"0.0.0.0","pid":41}"#);
/// assert_eq!(msg, ServerMessage::PortOpened { port: 3000, address: "0.0.0.0".into(), pid: Some(41) });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerMessage {
    /// The session started; `session_id` is the remote process id.
    SessionInfo {
        /// Session id (the remote PID, as a string).
        session_id: String,
        /// Whether the session has a terminal.
        tty: bool,
    },
    /// A process in the sprite started listening on a port.
    PortOpened {
        /// The port.
        port: u16,
        /// The address it listens on (`127.0.0.1`, `0.0.0.0`, ...).
        address: String,
        /// The listening process.
        pid: Option<u32>,
    },
    /// A process stopped listening on a port.
    PortClosed {
        /// The port.
        port: u16,
        /// The address it listened on.
        address: String,
        /// The process that listened.
        pid: Option<u32>,
    },
    /// The text exit report (`{"type":"exit","exit_code":N}`).
    Exit {
        /// The exit code.
        code: i32,
    },
    /// Any other text: unknown types and non-JSON text, verbatim.
    Other(String),
}

impl ServerMessage {
    /// Parses one text frame. Never fails: what it does not recognise becomes [`ServerMessage::Other`].
    pub fn parse(text: &str) -> ServerMessage {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(rename = "type")]
            kind: String,
            session_id: Option<serde_json::Value>,
            tty: Option<bool>,
            port: Option<u16>,
            address: Option<String>,
            pid: Option<u32>,
            exit_code: Option<i32>,
            code: Option<i32>,
        }
        let Ok(raw) = serde_json::from_str::<Raw>(text) else {
            return ServerMessage::Other(text.to_owned());
        };
        match raw.kind.as_str() {
            "session_info" => {
                // Older servers sent the id as a number (PROTOCOL.md §17.8).
                let session_id = match raw.session_id {
                    Some(serde_json::Value::String(s)) => s,
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    _ => return ServerMessage::Other(text.to_owned()),
                };
                ServerMessage::SessionInfo {
                    session_id,
                    tty: raw.tty.unwrap_or(false),
                }
            }
            "port_opened" | "port_closed" if raw.port.is_some() => {
                let port = raw.port.unwrap_or_default();
                let address = raw.address.unwrap_or_default();
                if raw.kind == "port_opened" {
                    ServerMessage::PortOpened {
                        port,
                        address,
                        pid: raw.pid,
                    }
                } else {
                    ServerMessage::PortClosed {
                        port,
                        address,
                        pid: raw.pid,
                    }
                }
            }
            "exit" => match raw.exit_code.or(raw.code) {
                Some(code) => ServerMessage::Exit { code },
                None => ServerMessage::Other(text.to_owned()),
            },
            _ => ServerMessage::Other(text.to_owned()),
        }
    }
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sprite_info_tolerates_nulls_and_unknown_fields() {
        let info: SpriteInfo = serde_json::from_str(
            r#"{"name":"a","labels":null,"org_slug":"me","brand_new_field":{"x":1},"last_running_at":null}"#,
        )
        .unwrap();
        assert_eq!(info.organization.as_deref(), Some("me"));
        assert!(info.labels.is_empty());
    }

    #[test]
    fn page_stats_from_org_or_top_level() {
        let page: SpritePage =
            serde_json::from_str(r#"{"sprites":[],"running":1,"warm":2,"cold":3}"#).unwrap();
        assert_eq!(page.stats().unwrap().cold, Some(3));
        let page: SpritePage =
            serde_json::from_str(r#"{"sprites":[],"org":{"name":"o","running":4}}"#).unwrap();
        assert_eq!(page.stats().unwrap().running, Some(4));
    }

    #[test]
    fn next_token_needs_has_more_and_a_token() {
        let page: SpritePage =
            serde_json::from_str(r#"{"sprites":[],"has_more":true,"next_continuation_token":""}"#)
                .unwrap();
        assert_eq!(page.next_token(), None);
        let page: SpritePage = serde_json::from_str(
            r#"{"sprites":[],"has_more":false,"next_continuation_token":"x"}"#,
        )
        .unwrap();
        assert_eq!(page.next_token(), None);
        let page: SpritePage =
            serde_json::from_str(r#"{"has_more":true,"next_continuation_token":"x"}"#).unwrap();
        assert_eq!(page.next_token(), Some("x"));
    }

    #[test]
    fn server_messages() {
        assert_eq!(
            ServerMessage::parse(r#"{"type":"session_info","session_id":4127,"tty":false}"#),
            ServerMessage::SessionInfo {
                session_id: "4127".into(),
                tty: false
            }
        );
        assert_eq!(
            ServerMessage::parse(r#"{"type":"exit","code":3}"#),
            ServerMessage::Exit { code: 3 }
        );
        assert_eq!(
            ServerMessage::parse("hello"),
            ServerMessage::Other("hello".into())
        );
        assert_eq!(
            ServerMessage::parse(r#"{"type":"mystery"}"#),
            ServerMessage::Other(r#"{"type":"mystery"}"#.into())
        );
    }
}
