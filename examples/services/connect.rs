//! What the service examples share: a client from the environment (`SPRITES_TOKEN`, optionally
//! `SPRITES_API_URL`), or an embedded `sprites-local` in a temporary directory, and a
//! throw-away sprite. Included by each `service_*` example with `#[path]`, beside `support/local.rs`.

use crate::local::{LocalServer, connect};
use sprites::{Sprite, TempSprite};

/// A client and a fresh sprite (deleted when dropped), plus the embedded server if one was
/// started (shut down, its data removed, when dropped — after the sprite).
pub struct Session {
    pub sprite: TempSprite,
    _local: Option<LocalServer>,
}

impl std::ops::Deref for Session {
    type Target = Sprite;

    fn deref(&self) -> &Sprite {
        &self.sprite
    }
}

pub fn session(prefix: &str) -> Result<Session, Box<dyn std::error::Error>> {
    let (client, local) = connect(prefix)?;
    let sprite = client.create_temp_sprite(prefix)?;
    println!("created sprite {}", sprite.name());
    Ok(Session {
        sprite,
        _local: local,
    })
}

/// Prints one service event the way a terminal log would show it.
pub fn show(event: &sprites::ServiceEvent) {
    use sprites::ServiceEventKind as K;
    match (&event.kind, &event.data, event.exit_code) {
        (K::Stdout | K::Stderr, Some(data), _) => print!("  [{:?}] {data}", event.kind),
        (K::Exit, _, Some(code)) => println!("  exit {code}"),
        (K::Complete, _, _) => println!(
            "  complete (log: {})",
            event
                .log_files
                .as_ref()
                .and_then(|l| l.combined.as_deref())
                .unwrap_or("?")
        ),
        (kind, data, _) => println!("  {kind:?} {}", data.as_deref().unwrap_or("")),
    }
}
