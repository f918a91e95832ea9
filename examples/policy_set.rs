//! Restrict a sprite: allow only some domains, forbid new privileges, cap memory; then show
//! what a program inside sees.
//!
//! ```text
//! cargo run --example policy_set [-- SPRITE]
//! ```
//!
//! With `SPRITES_TOKEN` set it changes SPRITE's policies on that API; otherwise it starts an
//! embedded `sprites-local` and uses a fresh sprite. (In the embedded server's sandbox
//! runtime the network rules are enforced by the sprite's resolver; the host runtime only
//! stores them. The `Sprites-Local-Enforcement` response header says which.)

#[path = "support/local.rs"]
mod local;

use sprites::{MemoryPolicy, NetworkPolicy, NetworkRule, PrivilegesPolicy, ResourcesPolicy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (client, local) = local::connect("policy-set")?;
    let (sprite, made) = match std::env::args().nth(1) {
        Some(name) => (client.sprite(name), false),
        None => {
            let name = format!("policy-set-{}", std::process::id());
            (client.create_sprite(&name)?, true)
        }
    };
    let result = set(&sprite);
    if made {
        sprite.delete()?;
    }
    drop(local);
    result
}

fn set(sprite: &sprites::Sprite) -> Result<(), Box<dyn std::error::Error>> {
    let policy = NetworkPolicy::new([
        NetworkRule::include_defaults(),
        NetworkRule::allow("example.com"),
        NetworkRule::allow("*.example.com"),
        NetworkRule::deny("blocked.example.com"),
    ]);
    sprite.update_network_policy(&policy)?;
    println!("network policy set: {} rules", policy.rules.len());

    // A malformed rule is refused with the server's reason.
    let bad = NetworkPolicy::new([NetworkRule::allow("exa*mple.com")]);
    match sprite.update_network_policy(&bad) {
        Err(sprites::Error::Api(e)) => println!("refused as expected: {} {}", e.status, e.message),
        other => println!("unexpected: {other:?}"),
    }

    sprite.update_privileges_policy(&PrivilegesPolicy {
        no_new_privileges: Some(true),
        ..Default::default()
    })?;
    sprite.update_resources_policy(&ResourcesPolicy {
        memory: Some(MemoryPolicy {
            limit_mb: Some(1024),
            autoscale: Some(false),
        }),
    })?;
    println!("privileges: {:?}", sprite.privileges_policy()?);
    println!("resources: {:?}", sprite.resources_policy()?);

    // What a program inside sees: the policy file, and a denied name refused.
    let out = sprite
        .command("sh")
        .args([
            "-c",
            "cat /.sprite/policy/network.json 2>&1 | head -c 400; \
             getent hosts blocked.example.com >/dev/null && echo 'blocked.example.com: resolved' \
             || echo 'blocked.example.com: not resolved'; grep NoNewPrivs /proc/self/status",
        ])
        .output()?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}
