//! Services through the real client against a real sprites-local (PROTOCOL.md §11): create,
//! start, stop, restart, signal, logs, delete, crash restarts, a stop that sticks across a
//! server restart, `needs` order, and the errors (400, 404, 409). Honours
//! `SPRITES_TEST_RUNTIME` like the other end-to-end suites.

// Built with the other end-to-end tests, which run on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::{Local, test_runtime};
use sprites::{Client, Error, ServiceEvent, ServiceEventKind, ServiceSpec, ServiceStatus, Sprite};
use std::time::{Duration, Instant};

const BOUND: Duration = Duration::from_secs(20);

fn sh(script: &str) -> ServiceSpec {
    ServiceSpec::new("sh").args(["-c", script])
}

fn status(sprite: &Sprite, name: &str) -> ServiceStatus {
    sprite.get_service(name).unwrap().state.unwrap().status
}

fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + BOUND;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn collect(events: sprites::ServiceEvents) -> Vec<ServiceEvent> {
    events.collect::<Result<_, _>>().expect("no error event")
}

fn kinds(events: &[ServiceEvent]) -> Vec<ServiceEventKind> {
    events.iter().map(|e| e.kind.clone()).collect()
}

fn api_status(err: Error) -> u16 {
    match err {
        Error::Api(e) => e.status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn logged(sprite: &Sprite, name: &str, lines: usize) -> Vec<String> {
    sprite
        .service_logs(name, Some(lines), None)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            matches!(e.kind, ServiceEventKind::Stdout | ServiceEventKind::Stderr)
                .then(|| e.data.unwrap())
        })
        .collect()
}

#[test]
fn create_stop_start_restart_signal_logs_and_delete() {
    let local = Local::start();
    let sprite = local.sprite("svc");
    let script = "trap 'echo got-hup' HUP; for i in 1 2 3 4 5; do echo line$i; done; \
                  while :; do sleep 1 & wait $!; done";
    let spec = sh(script).env("GREETING", "hi").dir("/");
    let events = collect(
        sprite
            .create_service("app", &spec, Some(Duration::from_millis(300)))
            .unwrap(),
    );
    assert_eq!(events[0].kind, ServiceEventKind::Started);
    assert!(events[0].timestamp_ms > 1_700_000_000_000);
    let last = events.last().unwrap();
    assert_eq!(last.kind, ServiceEventKind::Complete);
    let log = last.log_files.clone().unwrap().combined.unwrap();
    assert!(log.ends_with("/.sprite/logs/services/app.log"), "{log}");

    let app = sprite.get_service("app").unwrap();
    assert_eq!(app.cmd, "sh");
    assert_eq!(app.env["GREETING"], "hi");
    assert_eq!(app.dir.as_deref(), Some("/"));
    let state = app.state.unwrap();
    assert_eq!(state.status, ServiceStatus::Running);
    assert!(state.pid.is_some() && state.started_at.is_some());
    assert_eq!(sprite.list_services().unwrap().len(), 1);

    until("five lines", || logged(&sprite, "app", 10).len() >= 5);
    assert_eq!(logged(&sprite, "app", 2), ["line4\n", "line5\n"]);
    sprite.signal_service("app", "SIGHUP").unwrap();
    until("the HUP trap", || {
        logged(&sprite, "app", 3).iter().any(|l| l == "got-hup\n")
    });

    let stop = collect(
        sprite
            .stop_service("app", Some(Duration::from_secs(2)))
            .unwrap(),
    );
    assert_eq!(
        kinds(&stop),
        [
            ServiceEventKind::Stopping,
            ServiceEventKind::Exit,
            ServiceEventKind::Stopped,
            ServiceEventKind::Complete
        ]
    );
    assert_eq!(stop[1].exit_code, Some(128 + 15));
    assert_eq!(status(&sprite, "app"), ServiceStatus::Stopped);
    // Not running: stop and signal are 409.
    assert_eq!(
        api_status(sprite.stop_service("app", None).unwrap_err()),
        409
    );
    assert_eq!(
        api_status(sprite.signal_service("app", "HUP").unwrap_err()),
        409
    );

    sprite
        .start_service("app", Some(Duration::ZERO))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(status(&sprite, "app"), ServiceStatus::Running);
    let restart = kinds(&collect(
        sprite.restart_service("app", Some(Duration::ZERO)).unwrap(),
    ));
    assert_eq!(restart.first(), Some(&ServiceEventKind::Stopping));
    assert!(restart.contains(&ServiceEventKind::Started), "{restart:?}");
    assert_eq!(status(&sprite, "app"), ServiceStatus::Running);
    // A restart by request is not a crash.
    let state = sprite.get_service("app").unwrap().state.unwrap();
    assert_eq!(state.restart_count, 0);

    sprite.delete_service("app").unwrap();
    assert_eq!(api_status(sprite.get_service("app").unwrap_err()), 404);
    assert!(sprite.list_services().unwrap().is_empty());
}

#[test]
fn a_crash_is_restarted_and_counted() {
    let local = Local::start();
    let sprite = local.sprite("svc");
    let events = collect(
        sprite
            .create_service(
                "crashy",
                &sh("echo boom >&2; exit 7"),
                Some(Duration::from_millis(300)),
            )
            .unwrap(),
    );
    assert!(
        events
            .iter()
            .any(|e| e.kind == ServiceEventKind::Stderr && e.data.as_deref() == Some("boom\n"))
    );
    assert!(events.iter().any(|e| e.exit_code == Some(7)));
    until("a restart", || {
        sprite
            .get_service("crashy")
            .unwrap()
            .state
            .unwrap()
            .restart_count
            >= 2
    });
    let state = sprite.get_service("crashy").unwrap().state.unwrap();
    if state.status == ServiceStatus::Failed {
        assert!(state.next_restart_at.is_some(), "{state:?}");
        assert_eq!(state.error, "exited with code 7");
    }
    // KILL through signal is a crash too; then a stop ends the restarts.
    sprite.stop_service("crashy", None).unwrap().wait().unwrap();
    assert_eq!(status(&sprite, "crashy"), ServiceStatus::Stopped);
}

#[test]
fn a_stop_sticks_and_services_return_in_needs_order_after_a_server_restart() {
    let mut local = Local::start();
    let sprite = local.sprite("svc");
    let zero = Some(Duration::ZERO);
    let sleeper = || ServiceSpec::new("sleep").arg("1000");
    sprite
        .create_service("db", &sleeper(), zero)
        .unwrap()
        .wait()
        .unwrap();
    sprite
        .create_service("web", &sleeper().needs(["db"]), zero)
        .unwrap()
        .wait()
        .unwrap();
    sprite
        .create_service("cron", &sleeper(), zero)
        .unwrap()
        .wait()
        .unwrap();
    sprite.stop_service("cron", None).unwrap().wait().unwrap();
    let name = sprite.name().to_owned();

    local.server.take().unwrap().shutdown();
    let server = sprites_local::Server::builder()
        .addr("127.0.0.1:0")
        .token("test-token")
        .data_dir(local.dir.path().join("data"))
        .runtime(test_runtime())
        .start()
        .unwrap();
    let client = Client::builder()
        .base_url(server.url())
        .token("test-token")
        .build()
        .unwrap();
    let sprite = client.sprite(name);
    assert_eq!(status(&sprite, "cron"), ServiceStatus::Stopped);
    let db = sprite.get_service("db").unwrap().state.unwrap();
    let web = sprite.get_service("web").unwrap().state.unwrap();
    assert_eq!(db.status, ServiceStatus::Running);
    assert_eq!(web.status, ServiceStatus::Running);
    // RFC 3339 with the same date: the time of day orders them.
    let secs = |t: &str| -> f64 {
        let time = t.split('T').nth(1).unwrap().trim_end_matches('Z');
        time.split(':')
            .map(|p| p.parse::<f64>().unwrap())
            .fold(0.0, |acc, p| acc * 60.0 + p)
    };
    assert!(secs(db.started_at.as_deref().unwrap()) <= secs(web.started_at.as_deref().unwrap()));
    server.shutdown();
}

#[test]
fn errors_are_typed() {
    let local = Local::start();
    let sprite = local.sprite("svc");
    let zero = Some(Duration::ZERO);
    assert_eq!(api_status(sprite.get_service("ghost").unwrap_err()), 404);
    assert_eq!(
        api_status(sprite.start_service("ghost", zero).unwrap_err()),
        404
    );
    assert_eq!(
        api_status(sprite.service_logs("ghost", None, None).unwrap_err()),
        404
    );
    assert_eq!(api_status(sprite.delete_service("ghost").unwrap_err()), 404);
    let bad = ServiceSpec::new("true").needs(["ghost"]);
    assert_eq!(
        api_status(sprite.create_service("x", &bad, zero).unwrap_err()),
        400
    );
    let web = ServiceSpec::new("sleep").arg("1000").http_port(8080);
    sprite
        .create_service("web", &web, zero)
        .unwrap()
        .wait()
        .unwrap();
    let api = ServiceSpec::new("sleep").arg("1000").http_port(8081);
    let err = sprite.create_service("api", &api, zero).unwrap_err();
    assert!(err.to_string().contains("HTTP port"), "{err}");
    assert_eq!(api_status(err), 409);
    assert_eq!(
        api_status(sprite.signal_service("web", "BOGUS").unwrap_err()),
        400
    );
    assert!(matches!(
        sprite.signal_service("web", "").unwrap_err(),
        Error::InvalidInput(_)
    ));
    // A start that fails is an error event, which wait() turns into Err.
    let err = sprite
        .create_service("missing", &ServiceSpec::new("/no/such/program"), zero)
        .unwrap()
        .wait()
        .unwrap_err();
    assert!(err.to_string().contains("/no/such/program"), "{err}");
    assert_eq!(status(&sprite, "missing"), ServiceStatus::Failed);
}
