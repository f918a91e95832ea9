//! What the service examples share: a client from the environment (`SPRITES_TOKEN`, optionally
//! `SPRITES_API_URL`), or an embedded `sprites-local` in a temporary directory, and a
//! throw-away sprite. Included by each `service_*` example with `#[path]`.

use sprites::{Client, Sprite, TempSprite};

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
    let (client, local) = connect()?;
    let sprite = client.create_temp_sprite(prefix)?;
    println!("created sprite {}", sprite.name());
    Ok(Session {
        sprite,
        _local: local,
    })
}

fn connect() -> Result<(Client, Option<LocalServer>), Box<dyn std::error::Error>> {
    if std::env::var_os("SPRITES_TOKEN").is_some() || std::env::var_os("SPRITE_TOKEN").is_some() {
        let client = Client::from_env()?;
        println!("using {}", client.base_url());
        return Ok((client, None));
    }
    embedded()
}

#[cfg(not(target_os = "linux"))]
fn embedded() -> Result<(Client, Option<LocalServer>), Box<dyn std::error::Error>> {
    Err("set SPRITES_TOKEN: the embedded sprites-local runs on Linux only".into())
}

#[cfg(target_os = "linux")]
fn embedded() -> Result<(Client, Option<LocalServer>), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("sprites-services-{}", std::process::id()));
    let server = sprites_local::Server::builder().data_dir(&dir).start()?;
    println!(
        "no SPRITES_TOKEN set: started an embedded sprites-local at {}",
        server.url()
    );
    let client = Client::builder()
        .base_url(server.url())
        .token(server.token())
        .build()?;
    Ok((
        client,
        Some(LocalServer {
            server: Some(server),
            dir,
        }),
    ))
}

/// Shuts the embedded server down and removes its data when dropped.
struct LocalServer {
    #[cfg(target_os = "linux")]
    server: Option<sprites_local::ServerHandle>,
    dir: std::path::PathBuf,
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
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
