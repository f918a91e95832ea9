//! Restore a sprite to a checkpoint, following its progress on a bar.
//!
//! ```text
//! cargo run --example checkpoint_restore [-- SPRITE ID]
//! ```
//!
//! With `SPRITES_TOKEN` set it restores SPRITE to checkpoint ID on that API (the Go SDK's
//! `RestoreCheckpoint`) — destructive: the sprite's processes end and its files become the
//! checkpoint's. Otherwise it starts an embedded `sprites-local`, makes a sprite, checkpoints
//! it, changes a file, restores and shows the file back as it was.

#[path = "support/checkpoint_bar.rs"]
mod checkpoint_bar;
#[path = "support/local.rs"]
mod local;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (client, embedded) = local::connect("checkpoint-restore")?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [name, id] = args.as_slice() {
        let sprite = client.sprite(name.as_str());
        let restored = checkpoint_bar::follow("restore", sprite.restore_checkpoint(id)?)?;
        println!("{name} is now at checkpoint {restored}");
        return Ok(());
    }
    if embedded.is_none() {
        return Err("usage: checkpoint_restore SPRITE ID".into());
    }
    let sprite = client.create_sprite(&format!("cp-restore-{}", std::process::id()))?;
    let result = (|| {
        let sh = |script: &str| -> Result<String, Box<dyn std::error::Error>> {
            let out = sprite.command("sh").args(["-c", script]).output()?;
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        };
        sh("echo 'the original' > note")?;
        let id = checkpoint_bar::follow("checkpoint", sprite.create_checkpoint()?)?;
        sh("echo 'an unwanted change' > note")?;
        println!("before the restore: {}", sh("cat note")?);
        checkpoint_bar::follow("restore", sprite.restore_checkpoint(&id)?)?;
        println!("after restoring {id}: {}", sh("cat note")?);
        Ok::<(), Box<dyn std::error::Error>>(())
    })();
    sprite.delete()?;
    result
}
