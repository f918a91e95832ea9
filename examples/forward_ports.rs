//! Forwards every port a sprite listens on to this machine, as the ports open and close, like
//! the official CLI's automatic port forwarding.
//!
//! ```text
//! cargo run --example forward_ports -- NAME            # until Ctrl-C
//! cargo run --example forward_ports -- --demo          # an embedded sprites-local and a demo server
//! ```
//!
//! Each sprite port is forwarded to the same local port on `127.0.0.1` when that is free, else
//! to any free one. The port list comes from the sprite's port watch (`Sprite::watch_ports`):
//! a snapshot first, then a `port_opened` / `port_closed` event per change.

use sprites::{Client, PortEvent, PortEventKind, PortForward, Sprite, Stdio};
use std::collections::HashMap;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = std::env::args()
        .nth(1)
        .ok_or("usage: forward_ports NAME | --demo")?;
    if arg == "--demo" {
        return demo();
    }
    let sprite = Client::from_env()?.sprite(&arg);
    let mut forwards = Forwards::default();
    let mut watch = sprite.watch_ports()?;
    for port in watch.ports().to_vec() {
        forwards.apply(&sprite, &port);
    }
    for event in &mut watch {
        forwards.apply(&sprite, &event?);
    }
    Ok(())
}

/// The forwards open now, by sprite port.
#[derive(Default)]
struct Forwards(HashMap<u16, PortForward>);

impl Forwards {
    fn apply(&mut self, sprite: &Sprite, event: &PortEvent) {
        match event.kind {
            // A server on `0.0.0.0` and `::` is two events for one port: forward it once.
            PortEventKind::Opened if !self.0.contains_key(&event.port) => {
                let forward = sprite
                    .forward_port(event.port, event.port)
                    .or_else(|_| sprite.forward_port(0, event.port));
                match forward {
                    Ok(f) => {
                        println!(
                            "+ {} -> sprite port {} (pid {:?})",
                            f.local_addr(),
                            event.port,
                            event.pid
                        );
                        self.0.insert(event.port, f);
                    }
                    Err(e) => eprintln!("cannot forward port {}: {e}", event.port),
                }
            }
            PortEventKind::Closed => {
                if let Some(f) = self.0.remove(&event.port) {
                    println!("- {} (sprite port {} closed)", f.local_addr(), event.port);
                }
            }
            PortEventKind::Opened => {}
        }
    }
}

/// An embedded sprites-local, a sprite that opens a port, and one request through the
/// forward that appears for it.
fn demo() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("sprites-forward-demo-{}", std::process::id()));
    let server = sprites_local::Server::builder().data_dir(&dir).start()?;
    let client = Client::builder()
        .base_url(server.url())
        .token(server.token())
        .build()?;
    let result = (|| -> Result<(), Box<dyn std::error::Error>> {
        let sprite = client.create_temp_sprite("forward-demo")?;
        let mut watch = sprite.watch_ports()?;
        let mut forwards = Forwards::default();
        let mut http = sprite
            .command("python3")
            .args(["-m", "http.server", "0", "--bind", "127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        // The first port_opened is the server's.
        let event = loop {
            match watch.recv_timeout(Duration::from_secs(20))? {
                Some(e) if e.kind == PortEventKind::Opened => break e,
                Some(_) => {}
                None => return Err("the sprite opened no port within 20 s".into()),
            }
        };
        forwards.apply(&sprite, &event);
        let forward = forwards.0.get(&event.port).ok_or("no forward")?;
        let mut conn = std::net::TcpStream::connect(forward.local_addr())?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        use std::io::{Read, Write};
        conn.write_all(b"HEAD / HTTP/1.0\r\n\r\n")?;
        let mut head = String::new();
        conn.read_to_string(&mut head)?;
        println!("{}", head.lines().next().unwrap_or_default());
        http.kill()?;
        let _ = http.wait();
        // ... and its port_closed ends the forward.
        while let Some(e) = watch.recv_timeout(Duration::from_secs(20))? {
            forwards.apply(&sprite, &e);
            if e.kind == PortEventKind::Closed && e.port == event.port {
                break;
            }
        }
        Ok(())
    })();
    server.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
