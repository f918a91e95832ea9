//! What the examples share (each includes it with `#[path = "support/local.rs"] mod local;`):
//! a client from the environment (`SPRITES_TOKEN`, `SPRITES_API_URL`), or an embedded
//! `sprites-local` in a temporary directory when no token is set.

use sprites::Client;

/// A client from the environment, or an embedded local server (its data in a temporary
/// directory named after `tag`) and a client for it. Keep the second value alive as long as
/// the client is used.
pub fn connect(tag: &str) -> Result<(Client, Option<LocalServer>), Box<dyn std::error::Error>> {
    if std::env::var_os("SPRITES_TOKEN").is_some() || std::env::var_os("SPRITE_TOKEN").is_some() {
        let client = Client::from_env()?;
        println!("using {}", client.base_url());
        return Ok((client, None));
    }
    embedded(tag)
}

#[cfg(not(target_os = "linux"))]
fn embedded(_tag: &str) -> Result<(Client, Option<LocalServer>), Box<dyn std::error::Error>> {
    Err("set SPRITES_TOKEN: the embedded sprites-local runs on Linux only".into())
}

#[cfg(target_os = "linux")]
fn embedded(tag: &str) -> Result<(Client, Option<LocalServer>), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("sprites-{tag}-{}", std::process::id()));
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
pub struct LocalServer {
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
