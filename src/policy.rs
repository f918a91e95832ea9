//! A sprite's policies ([PROTOCOL.md §13](crate::protocol#13-policies-network-privileges-resources)):
//! which domains its programs may resolve ([`NetworkPolicy`]), what its processes may do
//! ([`PrivilegesPolicy`]) and how much memory they get ([`ResourcesPolicy`]).
//!
//! The network policy is the platform's documented one; privileges and resources are seen
//! only in the official JS SDK 0.1.0, and this crate speaks them the same way.

use serde::{Deserialize, Serialize};

use crate::client::Client;
use crate::error::Result;
use crate::sprite::Sprite;

/// What a [`NetworkRule::Domain`] does with the names it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    /// The name resolves.
    Allow,
    /// The name gets `REFUSED`.
    Deny,
}

/// One rule of a [`NetworkPolicy`]: `{"domain": .., "action": ..}` or `{"include": ..}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NetworkRule {
    /// A domain pattern and what to do with it: an exact name (`example.com`), the names
    /// below a domain (`*.example.com`) or every name (`*`). The most specific match wins.
    Domain {
        /// The pattern.
        domain: String,
        /// Allow or deny.
        action: RuleAction,
    },
    /// A named list of rules kept by the platform: `defaults` allows GitHub, npm, PyPI,
    /// Docker Hub and the major AI APIs.
    Include {
        /// The list's name.
        include: String,
    },
}

impl NetworkRule {
    /// Allows `domain`.
    ///
    /// ```
    /// let rule = sprites::NetworkRule::allow("*.example.com");
    /// assert_eq!(
    ///     serde_json::to_string(&rule).unwrap(),
    ///     r#"{"domain":"*.example.com","action":"allow"}"#
    /// );
    /// ```
    pub fn allow(domain: impl Into<String>) -> NetworkRule {
        NetworkRule::Domain {
            domain: domain.into(),
            action: RuleAction::Allow,
        }
    }

    /// Denies `domain`.
    pub fn deny(domain: impl Into<String>) -> NetworkRule {
        NetworkRule::Domain {
            domain: domain.into(),
            action: RuleAction::Deny,
        }
    }

    /// `{"include": "defaults"}`: the platform's list of commonly needed domains.
    pub fn include_defaults() -> NetworkRule {
        NetworkRule::Include {
            include: "defaults".into(),
        }
    }
}

/// A sprite's network policy: DNS rules. No rules (the default) means no restriction.
///
/// ```
/// use sprites::{NetworkPolicy, NetworkRule};
/// let policy = NetworkPolicy::new([
///     NetworkRule::include_defaults(),
///     NetworkRule::allow("example.com"),
///     NetworkRule::deny("ads.example.com"),
/// ]);
/// assert_eq!(policy.rules.len(), 3);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkPolicy {
    /// The rules, in order.
    #[serde(default)]
    pub rules: Vec<NetworkRule>,
}

impl NetworkPolicy {
    /// A policy of these rules.
    pub fn new(rules: impl IntoIterator<Item = NetworkRule>) -> NetworkPolicy {
        NetworkPolicy {
            rules: rules.into_iter().collect(),
        }
    }
}

/// What a sprite's processes may do (JS SDK 0.1.0's `PrivilegesPolicy`). Every field is
/// optional; an empty `profile` means the platform's default.
///
/// ```
/// let p = sprites::PrivilegesPolicy { no_new_privileges: Some(true), ..Default::default() };
/// assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"noNewPrivileges":true}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivilegesPolicy {
    /// `""` (default), `minimal`, `standard` or `privileged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Device paths to make available (`/dev/fuse`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<String>>,
    /// Set Linux's no-new-privileges flag on the sprite's processes (`sudo` stops
    /// working). On the wire this is camelCase `noNewPrivileges`, as the JS SDK sends it.
    #[serde(
        default,
        rename = "noNewPrivileges",
        alias = "no_new_privileges",
        skip_serializing_if = "Option::is_none"
    )]
    pub no_new_privileges: Option<bool>,
}

/// How much memory a sprite gets (JS SDK 0.1.0's `ResourcesPolicy`).
///
/// ```
/// use sprites::{MemoryPolicy, ResourcesPolicy};
/// let r = ResourcesPolicy { memory: Some(MemoryPolicy { limit_mb: Some(2048), autoscale: None }) };
/// assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"memory":{"limit_mb":2048}}"#);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourcesPolicy {
    /// Memory settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryPolicy>,
}

/// The `memory` part of a [`ResourcesPolicy`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryPolicy {
    /// The limit in MiB (`limit_mb` on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_mb: Option<u64>,
    /// Let the platform scale memory itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<bool>,
}

impl Sprite {
    fn policy_path(&self, kind: &str) -> String {
        self.path(&format!("/policy/{kind}"))
    }

    fn get_policy<T: serde::de::DeserializeOwned>(&self, kind: &str) -> Result<T> {
        let response = self
            .client()
            .send(self.client().request("GET", &self.policy_path(kind)), None)?;
        Client::decode(response)
    }

    fn post_policy<T: Serialize>(&self, kind: &str, policy: &T) -> Result<()> {
        let body = serde_json::to_value(policy).map_err(crate::Error::Decode)?;
        self.client().send(
            self.client().request("POST", &self.policy_path(kind)),
            Some(&body),
        )?;
        Ok(())
    }

    fn delete_policy(&self, kind: &str) -> Result<()> {
        self.client().send(
            self.client().request("DELETE", &self.policy_path(kind)),
            None,
        )?;
        Ok(())
    }

    /// The sprite's network policy (`GET /policy/network`; the Go SDK's
    /// `GetNetworkPolicy`).
    ///
    /// ```no_run
    /// # fn main() -> sprites::Result<()> {
    /// let client = sprites::Client::from_env()?;
    /// let policy = client.sprite("dev").network_policy()?;
    /// println!("{} rules", policy.rules.len());
    /// # Ok(()) }
    /// ```
    pub fn network_policy(&self) -> Result<NetworkPolicy> {
        self.get_policy("network")
    }

    /// Replaces the sprite's network policy with `policy` (the Go SDK's
    /// `UpdateNetworkPolicy`). An invalid rule (a malformed wildcard, an unknown action or
    /// include) is an [`Error::Api`](crate::Error::Api) with status 400 and the server's
    /// reason. It applies at once, to running programs too.
    ///
    /// ```no_run
    /// # fn main() -> sprites::Result<()> {
    /// use sprites::{NetworkPolicy, NetworkRule};
    /// let client = sprites::Client::from_env()?;
    /// client.sprite("dev").update_network_policy(&NetworkPolicy::new([
    ///     NetworkRule::include_defaults(),
    ///     NetworkRule::allow("*.example.com"),
    /// ]))?;
    /// # Ok(()) }
    /// ```
    pub fn update_network_policy(&self, policy: &NetworkPolicy) -> Result<()> {
        self.post_policy("network", policy)
    }

    /// The sprite's privileges policy (`GET /policy/privileges`).
    ///
    /// ```no_run
    /// # fn main() -> sprites::Result<()> {
    /// let client = sprites::Client::from_env()?;
    /// println!("{:?}", client.sprite("dev").privileges_policy()?);
    /// # Ok(()) }
    /// ```
    pub fn privileges_policy(&self) -> Result<PrivilegesPolicy> {
        self.get_policy("privileges")
    }

    /// Sets the sprite's privileges policy; new processes get it.
    ///
    /// ```no_run
    /// # fn main() -> sprites::Result<()> {
    /// let client = sprites::Client::from_env()?;
    /// let p = sprites::PrivilegesPolicy { no_new_privileges: Some(true), ..Default::default() };
    /// client.sprite("dev").update_privileges_policy(&p)?;
    /// # Ok(()) }
    /// ```
    pub fn update_privileges_policy(&self, policy: &PrivilegesPolicy) -> Result<()> {
        self.post_policy("privileges", policy)
    }

    /// Removes the sprite's privileges policy: back to the default.
    ///
    /// ```no_run
    /// # fn main() -> sprites::Result<()> {
    /// sprites::Client::from_env()?.sprite("dev").delete_privileges_policy()?;
    /// # Ok(()) }
    /// ```
    pub fn delete_privileges_policy(&self) -> Result<()> {
        self.delete_policy("privileges")
    }

    /// The sprite's resources policy (`GET /policy/resources`).
    ///
    /// ```no_run
    /// # fn main() -> sprites::Result<()> {
    /// let client = sprites::Client::from_env()?;
    /// println!("{:?}", client.sprite("dev").resources_policy()?.memory);
    /// # Ok(()) }
    /// ```
    pub fn resources_policy(&self) -> Result<ResourcesPolicy> {
        self.get_policy("resources")
    }

    /// Sets the sprite's resources policy; new processes get it.
    ///
    /// ```no_run
    /// # fn main() -> sprites::Result<()> {
    /// use sprites::{MemoryPolicy, ResourcesPolicy};
    /// let client = sprites::Client::from_env()?;
    /// let memory = MemoryPolicy { limit_mb: Some(2048), autoscale: Some(false) };
    /// client.sprite("dev").update_resources_policy(&ResourcesPolicy { memory: Some(memory) })?;
    /// # Ok(()) }
    /// ```
    pub fn update_resources_policy(&self, policy: &ResourcesPolicy) -> Result<()> {
        self.post_policy("resources", policy)
    }

    /// Removes the sprite's resources policy: back to the default.
    ///
    /// ```no_run
    /// # fn main() -> sprites::Result<()> {
    /// sprites::Client::from_env()?.sprite("dev").delete_resources_policy()?;
    /// # Ok(()) }
    /// ```
    pub fn delete_resources_policy(&self) -> Result<()> {
        self.delete_policy("resources")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_both_shapes_and_unknown_ones_fail() {
        let p: NetworkPolicy = serde_json::from_str(
            r#"{"rules":[{"include":"defaults"},{"domain":"a.com","action":"deny"}]}"#,
        )
        .unwrap();
        assert_eq!(
            p.rules,
            vec![NetworkRule::include_defaults(), NetworkRule::deny("a.com")]
        );
        assert!(serde_json::from_str::<NetworkRule>(r#"{"domain":"a.com"}"#).is_err());
        assert!(
            serde_json::from_str::<NetworkRule>(r#"{"domain":"a.com","action":"maybe"}"#).is_err()
        );
        let empty: NetworkPolicy = serde_json::from_str("{}").unwrap();
        assert!(empty.rules.is_empty());
        let priv_: PrivilegesPolicy =
            serde_json::from_str(r#"{"profile":"","no_new_privileges":false}"#).unwrap();
        assert_eq!(priv_.no_new_privileges, Some(false));
    }
}
