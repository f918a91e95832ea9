//! Create a sprite, run a few commands on it the way `std::process` runs local ones, delete it.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! With `SPRITES_TOKEN` (and optionally `SPRITES_API_URL`) set it uses that API; otherwise it
//! starts an embedded `sprites-local` in a temporary directory, so it works with no account.

use sprites::{Client, Stdio};
use std::io::{Read, Write};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Keep the embedded server (if any) alive until the end of main.
    let (client, _local) = connect()?;

    let name = format!("quickstart-{}", std::process::id());
    let sprite = client.create_sprite(&name)?;
    println!("created sprite {name}");

    let result = run(&sprite);

    sprite.delete()?;
    println!("deleted sprite {name}");
    result
}

fn run(sprite: &sprites::Sprite) -> Result<(), Box<dyn std::error::Error>> {
    // 1. Output, as with std::process::Command::output.
    let output = sprite.command("uname").arg("-sm").output()?;
    print!(
        "uname -sm      -> {}",
        String::from_utf8_lossy(&output.stdout)
    );

    // 2. A stdin pipe: write, drop (EOF), read the answer.
    let mut child = sprite
        .command("tr")
        .args(["a-z", "A-Z"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(b"hello from rust\n")?;
    let mut shouted = String::new();
    child
        .stdout
        .take()
        .expect("piped stdout")
        .read_to_string(&mut shouted)?;
    child.wait()?;
    print!("tr a-z A-Z     -> {shouted}");

    // 3. An exit code and a separate stderr.
    let output = sprite
        .command("sh")
        .args(["-c", "echo oops >&2; exit 3"])
        .output()?;
    println!(
        "exit 3         -> status {:?}, stderr {:?}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).trim_end()
    );

    // 4. Environment and working directory.
    let output = sprite
        .command("sh")
        .args(["-c", "echo $GREETING in $(pwd)"])
        .env("GREETING", "hi")
        .current_dir("/tmp")
        .output()?;
    print!(
        "env + dir      -> {}",
        String::from_utf8_lossy(&output.stdout)
    );
    Ok(())
}

/// A client from the environment, or an embedded local server and a client for it.
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
    let dir = std::env::temp_dir().join(format!("sprites-quickstart-{}", std::process::id()));
    let server = sprites_local::Server::builder().data_dir(&dir).start()?;
    println!(
        "no SPRITES_TOKEN set: started an embedded sprites-local at {}",
        server.url()
    );
    println!("{}", server.runtime_note());
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
