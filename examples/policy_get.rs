//! Print a sprite's policies: network rules, privileges, resources.
//!
//! ```text
//! cargo run --example policy_get [-- SPRITE]
//! ```
//!
//! With `SPRITES_TOKEN` set it reads SPRITE's policies from that API; otherwise it starts an
//! embedded `sprites-local` and shows a fresh sprite's (the defaults).

#[path = "support/local.rs"]
mod local;

use sprites::NetworkRule;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (client, local) = local::connect("policy-get")?;
    let (sprite, made) = match std::env::args().nth(1) {
        Some(name) => (client.sprite(name), false),
        None => {
            let name = format!("policy-get-{}", std::process::id());
            (client.create_sprite(&name)?, true)
        }
    };
    let result = show(&sprite);
    if made {
        sprite.delete()?;
    }
    drop(local);
    result
}

fn show(sprite: &sprites::Sprite) -> Result<(), Box<dyn std::error::Error>> {
    println!("sprite {}", sprite.name());
    let network = sprite.network_policy()?;
    if network.rules.is_empty() {
        println!("network: no rules (nothing restricted)");
    }
    for rule in &network.rules {
        match rule {
            NetworkRule::Domain { domain, action } => println!("network: {action:?} {domain}"),
            NetworkRule::Include { include } => println!("network: include {include}"),
        }
    }
    println!("privileges: {:?}", sprite.privileges_policy()?);
    println!("resources: {:?}", sprite.resources_policy()?);
    Ok(())
}
