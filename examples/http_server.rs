//! Serves a page with `python3 -m http.server` in a sprite and fetches it through a forwarded
//! local port.
//!
//! ```text
//! cargo run --example http_server
//! ```
//!
//! With `SPRITES_TOKEN` (and optionally `SPRITES_API_URL`) set it uses that API and a temporary
//! sprite; otherwise it starts an embedded `sprites-local`. Needs `python3` in the sprite.

#[path = "support/local.rs"]
mod local;

use sprites::Stdio;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (client, _local) = local::connect("http-example")?;
    let sprite = client.create_temp_sprite("http-example")?;

    // The page, then the server: port 0 lets the sprite pick a free port, which
    // `http.server` prints (unbuffered with -u) as "Serving HTTP on 127.0.0.1 port N ...".
    let fs = sprite.fs();
    fs.create_dir_all("/tmp/site")?;
    fs.write("/tmp/site/index.html", "<h1>Hello from a sprite</h1>\n")?;
    let mut server = sprite
        .command("python3")
        .args(["-u", "-m", "http.server", "0", "--bind", "127.0.0.1"])
        .args(["--directory", "/tmp/site"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut banner = String::new();
    BufReader::new(server.stdout.take().ok_or("no stdout")?).read_line(&mut banner)?;
    let port: u16 = banner
        .split_whitespace()
        .skip_while(|w| *w != "port")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("unexpected banner: {banner:?}"))?;
    println!("sprite: {}", banner.trim());

    // A free local port, forwarded to the sprite's.
    let forward = sprite.forward_port(0, port)?;
    println!("forwarding {} -> sprite port {port}", forward.local_addr());

    // Any local HTTP client works; a raw HTTP/1.0 request keeps the example dependency-free.
    let mut conn = TcpStream::connect(forward.local_addr())?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    conn.write_all(b"GET /index.html HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    let status = response.lines().next().unwrap_or_default();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    println!("{status}\n{body}");

    drop(forward);
    server.kill()?;
    let _ = server.wait();
    sprite.delete()?;
    if !status.contains(" 200 ") {
        return Err(format!("unexpected response: {status}").into());
    }
    Ok(())
}
