//! Sprite management (PROTOCOL.md §5): create, list, get, update, delete, upgrade.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{invalid_request, json_body, sprite_not_found};
use crate::net::body::RequestBody;
use crate::net::http::Response;
use crate::net::query::Query;
use crate::state::State;
use crate::store::{valid_name, CreateError, SpriteConfig, SpriteRecord, UrlSettings};
use crate::{random, time};

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 100;
const ORG: &str = "local";

/// SpriteInfo as sent on the wire (§5.1).
#[derive(Serialize)]
struct SpriteInfo<'a> {
    id: &'a str,
    name: &'a str,
    organization: &'static str,
    status: &'static str,
    config: &'a SpriteConfig,
    environment: &'a BTreeMap<String, String>,
    created_at: &'a str,
    updated_at: &'a str,
    url: Option<String>,
    url_settings: &'a UrlSettings,
    labels: &'a [String],
    last_running_at: Option<&'a str>,
    /// Not in the public API: whether `config`'s limits are enforced here (best effort).
    resource_limits: String,
}

fn status_of(rec: &SpriteRecord, running: bool) -> &'static str {
    if running {
        "running"
    } else if rec.last_running_at.is_some() {
        "warm"
    } else {
        "cold"
    }
}

fn info(rec: &SpriteRecord, running: bool, limits: String) -> SpriteInfo<'_> {
    SpriteInfo {
        id: &rec.id,
        name: &rec.name,
        organization: ORG,
        status: status_of(rec, running),
        config: &rec.config,
        environment: &rec.environment,
        created_at: &rec.created_at,
        updated_at: &rec.updated_at,
        url: None,
        url_settings: &rec.url_settings,
        labels: &rec.labels,
        last_running_at: rec.last_running_at.as_deref(),
        resource_limits: limits,
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    Response::error(500, "internal", &e.to_string())
}

/// Parses a JSON object body into `T`, mapping every failure to a 400.
pub(super) fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Response> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| invalid_request(&format!("request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(invalid_request("request body must be a JSON object"));
    }
    serde_json::from_value(value)
        .map_err(|e| invalid_request(&format!("invalid request body: {e}")))
}

#[derive(Deserialize)]
struct ConfigIn {
    ram_mb: Option<u64>,
    cpus: Option<u64>,
    storage_gb: Option<u64>,
    #[allow(dead_code)] // accepted and ignored: everything runs in region "local"
    region: Option<String>,
}

#[derive(Deserialize)]
struct UrlSettingsIn {
    auth: Option<String>,
    private_access: Option<String>,
}

#[derive(Deserialize)]
struct CreateIn {
    name: Option<String>,
    config: Option<ConfigIn>,
    labels: Option<Vec<String>>,
    url_settings: Option<UrlSettingsIn>,
    environment: Option<BTreeMap<String, String>>,
    // `wait_for_capacity` and `runtime` are accepted and ignored: capacity is always there.
}

fn url_settings_from(input: UrlSettingsIn, base: UrlSettings) -> Result<UrlSettings, Response> {
    let auth = input.auth.unwrap_or(base.auth);
    if auth != "sprite" && auth != "public" {
        return Err(invalid_request(&format!(
            "url_settings.auth must be \"sprite\" or \"public\", got {auth:?}"
        )));
    }
    Ok(UrlSettings {
        auth,
        private_access: input.private_access.or(base.private_access),
    })
}

/// `POST /v1/sprites`.
pub fn create(state: &Arc<State>, body: &mut dyn RequestBody) -> Response {
    let input: CreateIn = match json_body(body).and_then(|b| parse_body(&b)) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let Some(name) = input.name else {
        return invalid_request("name is required");
    };
    if !valid_name(&name) {
        return Response::error(
            400,
            "invalid_name",
            &format!(
                "invalid sprite name {name:?}: use 1-63 lowercase letters, digits and '-', \
                 starting with a letter or digit and not ending with '-'"
            ),
        );
    }
    let mut config = SpriteConfig::default();
    if let Some(c) = input.config {
        config.ram_mb = c.ram_mb.unwrap_or(config.ram_mb);
        config.cpus = c.cpus.unwrap_or(config.cpus);
        config.storage_gb = c.storage_gb.unwrap_or(config.storage_gb);
    }
    let url_settings = match input.url_settings {
        Some(u) => match url_settings_from(u, UrlSettings::default()) {
            Ok(u) => u,
            Err(r) => return r,
        },
        None => UrlSettings::default(),
    };
    let id = match random::uuid_v4() {
        Ok(id) => id,
        Err(e) => return internal(e),
    };
    let now = time::now_rfc3339();
    let rec = SpriteRecord {
        id,
        name: name.clone(),
        config: config.clone(),
        environment: input.environment.unwrap_or_default(),
        created_at: now.clone(),
        updated_at: now,
        url_settings,
        labels: input.labels.unwrap_or_default(),
        last_running_at: None,
    };
    match state
        .store
        .create(rec, |dir| state.runtime.create_sprite(dir, &config))
    {
        Ok(rec) => {
            let limits = state.runtime.limits_of(&state.store.sprite_dir(&rec.name));
            Response::json(201, &info(&rec, false, limits))
        }
        Err(CreateError::Exists) => Response::error(
            400,
            "sprite_already_exists",
            &format!("sprite {name:?} already exists"),
        ),
        Err(CreateError::Io(e)) => internal(format!("creating sprite {name:?}: {e}")),
    }
}

/// `GET /v1/sprites/{name}`.
pub fn get(state: &Arc<State>, name: &str) -> Response {
    match state.store.get(name) {
        Some(rec) => Response::json(
            200,
            &info(
                &rec,
                state.sessions.is_running(name),
                state.runtime.limits_of(&state.store.sprite_dir(name)),
            ),
        ),
        None => sprite_not_found(name),
    }
}

#[derive(Deserialize)]
struct UpdateIn {
    url_settings: Option<UrlSettingsIn>,
    labels: Option<Vec<String>>,
    clear_labels: Option<bool>,
}

/// `PUT /v1/sprites/{name}`: partial update; `clear_labels` first, then `labels` replaces.
pub fn update(state: &Arc<State>, name: &str, body: &mut dyn RequestBody) -> Response {
    let Some(current) = state.store.get(name) else {
        return sprite_not_found(name);
    };
    let input: UpdateIn = match json_body(body).and_then(|b| parse_body(&b)) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let url_settings = match input.url_settings {
        Some(u) => match url_settings_from(u, current.url_settings) {
            Ok(u) => Some(u),
            Err(r) => return r,
        },
        None => None,
    };
    let now = time::now_rfc3339();
    let result = state.store.update(name, |rec| {
        if input.clear_labels == Some(true) {
            rec.labels.clear();
        }
        if let Some(labels) = input.labels {
            rec.labels = labels;
        }
        if let Some(u) = url_settings {
            rec.url_settings = u;
        }
        rec.updated_at = now;
    });
    match result {
        Ok(Some(rec)) => Response::json(
            200,
            &info(
                &rec,
                state.sessions.is_running(name),
                state.runtime.limits_of(&state.store.sprite_dir(name)),
            ),
        ),
        Ok(None) => sprite_not_found(name),
        Err(e) => internal(format!("updating sprite {name:?}: {e}")),
    }
}

/// `DELETE /v1/sprites/{name}`: kills its processes, removes its files.
pub fn delete(state: &Arc<State>, name: &str) -> Response {
    if !state.store.contains(name) {
        return sprite_not_found(name);
    }
    state.sessions.signal_sprite(name, libc::SIGKILL);
    crate::services::remove_sprite(state, name);
    match state.store.remove(name) {
        Ok(true) => {
            // An exec that started between the first kill and the removal.
            state.sessions.signal_sprite(name, libc::SIGKILL);
            state.sessions.forget_sprite(name);
            Response::empty(204)
        }
        Ok(false) => sprite_not_found(name),
        Err(e) => internal(format!("deleting sprite {name:?}: {e}")),
    }
}

/// `POST /v1/sprites/{name}/upgrade`: nothing to upgrade locally; bumps `updated_at`.
pub fn upgrade(state: &Arc<State>, name: &str) -> Response {
    let now = time::now_rfc3339();
    match state.store.update(name, |rec| rec.updated_at = now) {
        Ok(Some(_)) => Response::empty(204),
        Ok(None) => sprite_not_found(name),
        Err(e) => internal(format!("upgrading sprite {name:?}: {e}")),
    }
}

/// Continuation tokens: `c1.` + hex of the last name on the previous page. Opaque to
/// clients, stable across deletes (the next page starts after that name).
pub fn encode_token(last_name: &str) -> String {
    format!("c1.{}", random::to_hex(last_name.as_bytes()))
}

/// Decodes [`encode_token`]; None if the token was not made by us.
pub fn decode_token(token: &str) -> Option<String> {
    let hex = token.strip_prefix("c1.")?;
    if hex.is_empty() || hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    let name = String::from_utf8(bytes?).ok()?;
    valid_name(&name).then_some(name)
}

#[derive(Serialize)]
struct OrgStats {
    name: &'static str,
    running: usize,
    warm: usize,
    cold: usize,
    running_limit: usize,
    warm_limit: usize,
}

#[derive(Serialize)]
struct ListOut<'a> {
    sprites: Vec<SpriteInfo<'a>>,
    has_more: bool,
    next_continuation_token: Option<String>,
    org: OrgStats,
    running: usize,
    warm: usize,
    cold: usize,
}

/// `GET /v1/sprites?prefix=&max_results=&continuation_token=`.
pub fn list(state: &Arc<State>, q: &Query) -> Response {
    let max = match q.get("max_results").filter(|v| !v.is_empty()) {
        None => DEFAULT_PAGE,
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return invalid_request(&format!(
                    "max_results must be an integer from 1 to {MAX_PAGE}, got {v:?}"
                ))
            }
        },
    };
    let after = match q.get("continuation_token").filter(|v| !v.is_empty()) {
        None => None,
        Some(t) => match decode_token(t) {
            Some(name) => Some(name),
            None => return invalid_request("invalid continuation_token"),
        },
    };
    let prefix = q.get("prefix").unwrap_or("");

    let all = state.store.list(); // sorted by name
    let running = state.sessions.running_sprites();
    let is_running = |r: &SpriteRecord| running.contains(&r.name);
    let (mut n_running, mut n_warm, mut n_cold) = (0, 0, 0);
    for r in &all {
        match status_of(r, is_running(r)) {
            "running" => n_running += 1,
            "warm" => n_warm += 1,
            _ => n_cold += 1,
        }
    }
    let matching: Vec<&SpriteRecord> = all
        .iter()
        .filter(|r| r.name.starts_with(prefix))
        .filter(|r| after.as_deref().is_none_or(|a| r.name.as_str() > a))
        .collect();
    let has_more = matching.len() > max;
    let page = &matching[..matching.len().min(max)];
    let next = if has_more {
        page.last().map(|r| encode_token(&r.name))
    } else {
        None
    };
    let body = ListOut {
        sprites: page
            .iter()
            .map(|r| {
                let limits = state.runtime.limits_of(&state.store.sprite_dir(&r.name));
                info(r, is_running(r), limits)
            })
            .collect(),
        has_more,
        next_continuation_token: next,
        org: OrgStats {
            name: ORG,
            running: n_running,
            warm: n_warm,
            cold: n_cold,
            running_limit: 100,
            warm_limit: 100,
        },
        running: n_running,
        warm: n_warm,
        cold: n_cold,
    };
    Response::json(200, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_tokens_round_trip() {
        for name in ["a", "my-sprite", "z9"] {
            assert_eq!(decode_token(&encode_token(name)).as_deref(), Some(name));
        }
    }

    #[test]
    fn foreign_tokens_are_rejected() {
        for bad in [
            "", "abc", "c1.", "c1.6", "c1.zz", "c1.4142", "c2.61", "c1.2d61",
        ] {
            assert_eq!(decode_token(bad), None, "{bad}");
        }
    }
}
