//! A service's logs: the last lines it wrote, then whatever it writes while we follow.
//!
//! ```text
//! cargo run --example service_logs
//! ```
//!
//! With `SPRITES_TOKEN` set it uses that API; otherwise an embedded `sprites-local`.

#[path = "services/connect.rs"]
mod connect;
#[path = "support/local.rs"]
mod local;

use sprites::{ServiceEventKind, ServiceSpec};
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sprite = connect::session("service-logs")?;
    let chatty = ServiceSpec::new("sh").args([
        "-c",
        "for i in $(seq 1 20); do echo line $i; done; echo oops >&2; \
         while :; do sleep 0.3; echo still here; done",
    ]);
    sprite
        .create_service("chatty", &chatty, Some(Duration::from_millis(200)))?
        .wait()?;

    println!("the last 5 lines, then 1 s of following:");
    for event in sprite.service_logs("chatty", Some(5), Some(Duration::from_secs(1)))? {
        let event = event?;
        match event.kind {
            ServiceEventKind::Stdout | ServiceEventKind::Stderr => connect::show(&event),
            ServiceEventKind::Complete => connect::show(&event),
            _ => {}
        }
    }
    Ok(())
}
