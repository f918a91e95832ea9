//! Create a service on a sprite and watch it start: its definition (`cmd`, `args`, `env`,
//! `dir`, `needs`, `http_port`), the start's events, then its typed state.
//!
//! ```text
//! cargo run --example service_create
//! ```
//!
//! With `SPRITES_TOKEN` set it uses that API; otherwise an embedded `sprites-local`.

#[path = "services/connect.rs"]
mod connect;
#[path = "support/local.rs"]
mod local;

use sprites::ServiceSpec;
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sprite = connect::session("service-create")?;

    // A "database" first, then a web server that needs it and serves the sprite's URL.
    let db = ServiceSpec::new("sh").args(["-c", "echo db ready; exec sleep infinity"]);
    println!("create db:");
    for event in sprite.create_service("db", &db, Some(Duration::from_millis(500)))? {
        connect::show(&event?);
    }
    let web = ServiceSpec::new("python3")
        .args(["-m", "http.server", "8080"])
        .needs(["db"])
        .http_port(8080)
        .env("PYTHONUNBUFFERED", "1")
        .dir("/tmp");
    println!("create web:");
    for event in sprite.create_service("web", &web, Some(Duration::from_secs(1)))? {
        connect::show(&event?);
    }

    for service in sprite.list_services()? {
        let state = service.state.expect("the server reports a state");
        println!(
            "{:4} {:8} pid {:?} needs {:?} http_port {:?} restarts {}",
            service.name,
            state.status,
            state.pid,
            service.needs,
            service.http_port,
            state.restart_count
        );
    }
    Ok(())
}
