//! Stop a service (TERM, then KILL after the grace period) and see that the stop sticks:
//! the service stays stopped — it is not restarted as after a crash.
//!
//! ```text
//! cargo run --example service_stop
//! ```
//!
//! With `SPRITES_TOKEN` set it uses that API; otherwise an embedded `sprites-local`.

#[path = "services/connect.rs"]
mod connect;
#[path = "support/local.rs"]
mod local;

use sprites::{ServiceSpec, ServiceStatus};
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sprite = connect::session("service-stop")?;
    // Ignores TERM, so the stop has to KILL it after the 1 s grace.
    let stubborn = ServiceSpec::new("sh").args(["-c", "trap '' TERM; while :; do sleep 1; done"]);
    sprite
        .create_service("stubborn", &stubborn, Some(Duration::ZERO))?
        .wait()?;

    println!("stop with a 1 s grace:");
    for event in sprite.stop_service("stubborn", Some(Duration::from_secs(1)))? {
        connect::show(&event?);
    }
    std::thread::sleep(Duration::from_secs(1));
    let state = sprite.get_service("stubborn")?.state.expect("state");
    assert_eq!(state.status, ServiceStatus::Stopped);
    println!(
        "a second later it is still {} (restarts: {})",
        state.status, state.restart_count
    );

    // Stopping what is not running is a 409.
    match sprite.stop_service("stubborn", None) {
        Err(sprites::Error::Api(e)) => println!("stopping again: {} {}", e.status, e.message),
        other => println!("stopping again: {other:?}"),
    }
    Ok(())
}
