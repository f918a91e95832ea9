//! Take a checkpoint of a sprite, with a comment, following its progress on a bar.
//!
//! ```text
//! cargo run --example checkpoint_create [-- SPRITE [COMMENT]]
//! ```
//!
//! With `SPRITES_TOKEN` set it checkpoints SPRITE on that API (the Go SDK's
//! `CreateCheckpointWithComment`); otherwise it starts an embedded `sprites-local`, makes a
//! sprite with a file in it, checkpoints it and deletes it again.

#[path = "support/checkpoint_bar.rs"]
mod checkpoint_bar;
#[path = "support/local.rs"]
mod local;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (client, embedded) = local::connect("checkpoint-create")?;
    let mut args = std::env::args().skip(1);
    let comment = |args: &mut std::iter::Skip<std::env::Args>| {
        args.next()
            .unwrap_or_else(|| "made by checkpoint_create".into())
    };
    let (sprite, temporary) = match args.next() {
        Some(name) => (client.sprite(name), false),
        None if embedded.is_some() => {
            let sprite = client.create_sprite(&format!("cp-create-{}", std::process::id()))?;
            sprite
                .command("sh")
                .args(["-c", "echo hello > greeting"])
                .status()?;
            (sprite, true)
        }
        None => return Err("usage: checkpoint_create SPRITE [COMMENT]".into()),
    };
    let result = (|| {
        let comment = comment(&mut args);
        let stream = sprite.create_checkpoint_with_comment(&comment)?;
        let id = checkpoint_bar::follow("checkpoint", stream)?;
        let cp = sprite.get_checkpoint(&id)?;
        println!(
            "created {} at {} (comment {:?}, from {})",
            cp.id,
            cp.create_time,
            cp.comment,
            cp.source_id.as_deref().unwrap_or("nothing")
        );
        Ok::<(), Box<dyn std::error::Error>>(())
    })();
    if temporary {
        sprite.delete()?;
    }
    result
}
