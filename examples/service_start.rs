//! Start a stopped service and follow its first output; then restart it.
//!
//! ```text
//! cargo run --example service_start
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
    let sprite = connect::session("service-start")?;
    let ticker = ServiceSpec::new("sh").args([
        "-c",
        "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.2; done",
    ]);
    // Created (which starts it), then stopped, so there is something to start.
    sprite
        .create_service("ticker", &ticker, Some(Duration::ZERO))?
        .wait()?;
    sprite.stop_service("ticker", None)?.wait()?;

    println!("start, following the output for 1 s:");
    for event in sprite.start_service("ticker", Some(Duration::from_secs(1)))? {
        connect::show(&event?);
    }
    let state = sprite.get_service("ticker")?.state.expect("state");
    println!("ticker is {} (pid {:?})", state.status, state.pid);

    println!("restart:");
    for event in sprite.restart_service("ticker", Some(Duration::from_millis(300)))? {
        connect::show(&event?);
    }
    Ok(())
}
