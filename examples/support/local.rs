//! Shared by the checkpoint examples: a client from the environment (`SPRITES_TOKEN`,
//! `SPRITES_API_URL`), or an embedded `sprites-local` in a temporary directory when no token
//! is set; and a progress bar for checkpoint streams.

use sprites::{CheckpointStream, Client};

/// A client from the environment, or an embedded local server and a client for it. Keep
/// the second value alive as long as the client is used.
pub fn connect() -> Result<(Client, Option<LocalServer>), Box<dyn std::error::Error>> {
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
    let dir = std::env::temp_dir().join(format!("sprites-example-{}", std::process::id()));
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

/// Follows a create or restore stream on a progress bar; returns the checkpoint's id.
#[allow(dead_code)] // not every example streams
pub fn follow(
    what: &str,
    mut stream: CheckpointStream,
) -> Result<String, Box<dyn std::error::Error>> {
    let bar = indicatif::ProgressBar::new(100);
    bar.set_style(indicatif::ProgressStyle::with_template(
        "{prefix} [{bar:30}] {pos:>3}% {msg}",
    )?);
    bar.set_prefix(what.to_owned());
    for event in stream.by_ref() {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                bar.abandon_with_message("failed");
                return Err(e.into());
            }
        };
        if let Some(p) = event.progress {
            bar.set_position((p * 100.0).round() as u64);
        }
        bar.set_message(event.data.trim().to_owned());
    }
    bar.finish();
    Ok(stream
        .checkpoint_id()
        .ok_or("the stream named no checkpoint")?
        .to_owned())
}
