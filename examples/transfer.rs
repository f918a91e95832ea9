//! Copy a directory tree to a sprite and back, with real progress bars.
//!
//! ```text
//! cargo run --example transfer [-- LOCAL_DIR]     # default: this crate's src/
//! ```
//!
//! With `SPRITES_TOKEN` (and optionally `SPRITES_API_URL`) set it uses that API; otherwise (on
//! Linux) it starts an embedded `sprites-local` in a temporary directory. The sprite is a
//! temporary one: it is deleted at the end, even on error.

use indicatif::{ProgressBar, ProgressStyle};
use sprites::Client;
use sprites::fs::Progress;
use std::path::{Path, PathBuf};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let source = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let (client, _local) = connect()?;
    let sprite = client.create_temp_sprite("transfer")?;
    let fs = sprite.fs();
    // A new sprite's first command also pays for starting the sprite: start it first, so the
    // figures below are the transfers'.
    sprite.command("true").status()?;

    // Up: the totals are known from the local walk, so a real bar.
    let bar = ProgressBar::new(0).with_style(ProgressStyle::with_template(
        "up   {bar:40} {bytes}/{total_bytes} {msg}",
    )?);
    let started = Instant::now();
    let up = fs.upload_dir(&source, "/tmp/transfer", |p: &Progress| {
        bar.set_length(p.total_bytes.unwrap_or(0));
        bar.set_position(p.bytes);
        bar.set_message(format!("{}/{} files", p.files, p.total_files.unwrap_or(0)));
    })?;
    bar.finish();
    println!(
        "uploaded {} files, {} bytes in {:.2?}",
        up.files,
        up.bytes,
        started.elapsed()
    );

    // Down: tar on the sprite announces no totals, so a counter.
    let back = std::env::temp_dir().join(format!("sprites-transfer-{}", std::process::id()));
    let bar = ProgressBar::new_spinner().with_style(ProgressStyle::with_template(
        "down {spinner} {bytes} {msg}",
    )?);
    let started = Instant::now();
    let down = fs.download_dir("/tmp/transfer", &back, |p: &Progress| {
        bar.set_position(p.bytes);
        bar.set_message(format!("{} files", p.files));
    })?;
    bar.finish();
    println!(
        "downloaded {} files, {} bytes in {:.2?} to {}",
        down.files,
        down.bytes,
        started.elapsed(),
        back.display()
    );
    std::fs::remove_dir_all(&back)?;
    assert_eq!((up.files, up.bytes), (down.files, down.bytes));
    sprite.delete()?;
    Ok(())
}

/// A client, and whatever must live as long as it (an embedded server).
type Connected = (Client, Option<Box<dyn std::any::Any>>);

/// A client from the environment, or an embedded local server and a client for it.
fn connect() -> Result<Connected, Box<dyn std::error::Error>> {
    if std::env::var_os("SPRITES_TOKEN").is_some() || std::env::var_os("SPRITE_TOKEN").is_some() {
        return Ok((Client::from_env()?, None));
    }
    local()
}

#[cfg(target_os = "linux")]
fn local() -> Result<Connected, Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("sprites-transfer-srv-{}", std::process::id()));
    let server = sprites_local::Server::builder().data_dir(&dir).start()?;
    println!(
        "no SPRITES_TOKEN: using an embedded sprites-local ({})",
        server.url()
    );
    let client = Client::builder()
        .base_url(server.url())
        .token(server.token())
        .build()?;
    Ok((
        client,
        Some(Box::new(Local {
            server: Some(server),
            dir,
        })),
    ))
}

#[cfg(not(target_os = "linux"))]
fn local() -> Result<Connected, Box<dyn std::error::Error>> {
    Err("set SPRITES_TOKEN: the embedded sprites-local runs on Linux only".into())
}

/// The embedded server and its data, removed when dropped.
#[cfg(target_os = "linux")]
struct Local {
    server: Option<sprites_local::ServerHandle>,
    dir: PathBuf,
}

#[cfg(target_os = "linux")]
impl Drop for Local {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
