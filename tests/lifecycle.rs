//! End to end: a sprite's lifecycle, URL, check, restart and the watch stream
//! (PROTOCOL.md §5.4, §5.5, §14) against a real `sprites-local` with short lifecycle
//! periods, on the runtime `SPRITES_TEST_RUNTIME` names.

// sprites-local, which these tests drive, runs on Linux only.
#![cfg(target_os = "linux")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{TempDir, Watchdog, test_runtime};
use sprites::{Client, Error, SpriteStatus, WatchOptions};

const WARM: Duration = Duration::from_millis(1000);

struct Short {
    client: Client,
    server: sprites_local::ServerHandle,
    _dir: TempDir,
    _watchdog: Watchdog,
}

/// A server whose sprites go warm after [`WARM`] idle (cold only after 10 minutes).
fn start() -> Short {
    let dir = TempDir::new("life");
    let server = sprites_local::Server::builder()
        .token("test-token")
        .data_dir(dir.path().join("data"))
        .runtime(test_runtime())
        .warm_after(WARM)
        .cold_after(Duration::from_secs(600))
        .watch_heartbeat(Duration::from_millis(300))
        .start()
        .expect("start sprites-local");
    let client = Client::builder()
        .base_url(server.url())
        .token(server.token())
        .build()
        .unwrap();
    let name = std::thread::current().name().unwrap_or("test").to_owned();
    Short {
        client,
        server,
        _dir: dir,
        _watchdog: Watchdog::arm(&name),
    }
}

#[test]
fn watch_sprites_reports_create_running_warm_delete() {
    let s = start();
    let mut watch = s
        .client
        .watch_sprites(&WatchOptions::new().prefix("watched"))
        .unwrap();
    let sprite = s.client.create_sprite("watched-1").unwrap();
    let mut statuses = Vec::new();
    let mut heartbeats = 0;
    for event in watch.by_ref() {
        let event = event.unwrap();
        if event.is_heartbeat() {
            heartbeats += 1;
            assert!(event.org.is_some() && event.timestamp.is_some());
            continue;
        }
        assert_eq!(event.name.as_deref(), Some("watched-1"));
        let status = event.status_text.clone().unwrap();
        statuses.push(status.clone());
        match status.as_str() {
            "warm" => {
                assert!(event.last_warming_at.is_some() && event.last_running_at.is_some());
                sprite.delete().unwrap();
            }
            "deleted" => break,
            _ => {}
        }
    }
    assert_eq!(statuses, ["cold", "running", "warm", "deleted"]);
    // Idle, the stream carries heartbeats (every 300 ms here).
    let next = watch.next().unwrap().unwrap();
    assert!(next.is_heartbeat(), "{next:?}");
    let _ = heartbeats;
    // Dropping the watch mid-stream closes it at once.
    let started = Instant::now();
    drop(watch);
    assert!(started.elapsed() < Duration::from_secs(1));
    // Bad input is refused before anything is sent.
    assert!(matches!(
        s.client.watch_sprites(&WatchOptions::new().max_results(0)),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn wait_until_a_status() {
    let s = start();
    let started = Instant::now();
    let sprite = s.client.create_sprite("waits").unwrap();
    // Running without any command, within 2 s.
    let info = sprite
        .wait_until(SpriteStatus::Running, Duration::from_secs(2))
        .unwrap();
    assert_eq!(info.status.as_deref(), Some("running"));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(info.last_running_at.is_some());
    // Ready (warm or running) at once; warm after the idle period.
    sprite.wait_ready(Duration::from_millis(100)).unwrap();
    let info = sprite.wait_until(SpriteStatus::Warm, WARM * 5).unwrap();
    assert_eq!(info.status.as_deref(), Some("warm"));
    // Never cold within a short wait: a timeout, said so.
    let started = Instant::now();
    let err = sprite
        .wait_until(SpriteStatus::Cold, Duration::from_millis(500))
        .unwrap_err();
    assert_eq!(err.io_kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // A deleted sprite is a 404.
    sprite.delete().unwrap();
    let err = sprite
        .wait_until(SpriteStatus::Running, Duration::from_secs(1))
        .unwrap_err();
    assert_eq!(err.api().map(|a| a.status), Some(404), "{err}");
}

#[test]
fn check_and_restart() {
    let s = start();
    let sprite = s.client.create_sprite("restarts").unwrap();
    sprite
        .wait_until(SpriteStatus::Running, Duration::from_secs(5))
        .unwrap();
    let check = sprite.check().unwrap();
    assert_eq!(check.sprite_name, "restarts");
    assert_eq!(check.status, "ok");
    assert!(check.reason.is_none() && check.checked_at.is_some() && check.elapsed.is_some());

    // In the sprite's home (the default directory of a command, on either runtime).
    let out = sprite
        .command("sh")
        .arg("-c")
        .arg("echo still here > kept.txt")
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut sleeper = common::spawn_sleeper(&sprite);
    let done = sprite.restart().unwrap();
    assert_eq!(done.sprite_name, "restarts");
    assert!(!done.machine_id.is_empty() && !done.message.is_empty());
    // The running command ended; the file stayed; the sprite is up.
    let status = sleeper.wait().unwrap();
    assert!(!status.success(), "{status:?}");
    let out = sprite.command("cat").arg("kept.txt").output().unwrap();
    assert_eq!(out.stdout, b"still here\n");
    assert_eq!(sprite.info().unwrap().status.as_deref(), Some("running"));
    // Unknown sprites: 404.
    let ghost = s.client.sprite("ghost");
    assert_eq!(
        ghost.check().unwrap_err().api().map(|a| a.status),
        Some(404)
    );
    assert_eq!(
        ghost.restart().unwrap_err().api().map(|a| a.status),
        Some(404)
    );
}

#[test]
fn the_url_reaches_port_8080_in_the_sprite() {
    let s = start();
    let sprite = s.client.create_sprite("web").unwrap();
    let url = sprite.url().unwrap();
    let port = s.server.addr().port();
    assert_eq!(url, format!("http://web.localhost:{port}"));
    let mut server = sprite
        .command("sh")
        .arg("-c")
        .arg("d=$(mktemp -d) && cd $d && echo hi-from-web > index.html && exec python3 -m http.server 8080")
        .spawn()
        .unwrap();
    // `*.localhost` is loopback (browsers resolve it so): connect there, name the host.
    let get = |token: Option<&str>| {
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        write!(
            c,
            "GET /index.html HTTP/1.1\r\nHost: web.localhost:{port}\r\n{auth}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !get(Some("test-token")).starts_with("HTTP/1.0 200") {
        assert!(Instant::now() < deadline, "http.server never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(get(Some("test-token")).ends_with("hi-from-web\n"));
    assert!(get(None).starts_with("HTTP/1.1 401"));
    sprite
        .update(&sprites::SpriteUpdate::new().url_settings(sprites::UrlSettings::public()))
        .unwrap();
    assert!(get(None).ends_with("hi-from-web\n"));
    server.kill().unwrap();
    let _ = server.wait();
}
