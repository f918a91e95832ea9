//! List a sprite's checkpoints, newest first (the live state's `Current` entry included).
//!
//! ```text
//! cargo run --example checkpoint_list [-- SPRITE [--auto] [--history ID]]
//! ```
//!
//! With `SPRITES_TOKEN` set it lists SPRITE's on that API (the Go SDK's `ListCheckpoints`);
//! otherwise it starts an embedded `sprites-local`, makes a sprite with three checkpoints
//! and lists them.

#[path = "support/local.rs"]
mod local;

use sprites::CheckpointListOptions;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (client, embedded) = local::connect("checkpoint-list")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut options = CheckpointListOptions::new().include_auto(args.iter().any(|a| a == "--auto"));
    if let Some(i) = args.iter().position(|a| a == "--history") {
        options = options.history(args.get(i + 1).ok_or("--history needs an id")?);
    }
    let (sprite, temporary) = match args.first().filter(|a| !a.starts_with("--")) {
        Some(name) => (client.sprite(name.as_str()), false),
        None if embedded.is_some() => {
            let sprite = client.create_sprite(&format!("cp-list-{}", std::process::id()))?;
            for (i, comment) in ["first", "second", "third"].iter().enumerate() {
                sprite
                    .command("sh")
                    .args(["-c", &format!("echo {i} > counter")])
                    .status()?;
                sprite.create_checkpoint_with_comment(comment)?.wait()?;
            }
            (sprite, true)
        }
        None => return Err("usage: checkpoint_list SPRITE [--auto] [--history ID]".into()),
    };
    let result = sprite.list_checkpoints(&options).map(|list| {
        println!("{:<8} {:<32} {:<8} comment", "id", "created", "from");
        for cp in list {
            println!(
                "{:<8} {:<32} {:<8} {}{}",
                cp.id,
                cp.create_time,
                cp.source_id.as_deref().unwrap_or("-"),
                cp.comment,
                if cp.is_current() { "(live state)" } else { "" }
            );
        }
    });
    if temporary {
        sprite.delete()?;
    }
    Ok(result?)
}
