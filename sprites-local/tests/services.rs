//! End-to-end tests of services (PROTOCOL.md §11): a real server (host runtime, and the
//! sandbox runtime where this machine can make sandboxes), real processes, raw HTTP.
//! Every wait is bounded ([`TIMEOUT`]).

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;
use sprites_local::{Runtime, Server, ServerHandle};

fn server(dir: &Path, runtime: Runtime) -> Option<ServerHandle> {
    match Server::builder()
        .token("secret")
        .data_dir(dir)
        .runtime(runtime)
        .start()
    {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("SKIPPED ({runtime}): {e}");
            None
        }
    }
}

/// Runs `test` on a fresh server of each runtime this machine has.
fn each_runtime(tag: &str, test: impl Fn(&ServerHandle, &Path, Runtime)) {
    for rt in [Runtime::Host, Runtime::Sandbox] {
        let dir = TempDir::new(tag);
        if let Some(s) = server(&dir.0, rt) {
            test(&s, &dir.0, rt);
            s.shutdown();
        }
    }
}

fn svc_path(sprite: &str, rest: &str) -> String {
    format!("/v1/sprites/{sprite}/services{rest}")
}

/// The events of an NDJSON body.
fn events(r: &Resp) -> Vec<Value> {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    String::from_utf8_lossy(&r.body)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn kinds(evs: &[Value]) -> Vec<String> {
    evs.iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

/// Creates (or updates) and starts `svc` with `body`, following its output for `follow`.
fn put(s: &ServerHandle, sprite: &str, svc: &str, body: &str, follow: &str) -> Vec<Value> {
    let r = http(
        s,
        "PUT",
        &svc_path(sprite, &format!("/{svc}?duration={follow}")),
        Some(body),
    );
    events(&r)
}

fn get(s: &ServerHandle, sprite: &str, svc: &str) -> Value {
    let r = http(s, "GET", &svc_path(sprite, &format!("/{svc}")), None);
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()
}

fn status(v: &Value) -> &str {
    v["state"]["status"].as_str().unwrap()
}

/// `started_at` as seconds of the day (all tests run well within one day).
fn started_secs(v: &Value) -> f64 {
    let t = v["state"]["started_at"].as_str().unwrap();
    let time = t.split('T').nth(1).unwrap().trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next().unwrap().parse().unwrap();
    let m: f64 = parts.next().unwrap().parse().unwrap();
    let s: f64 = parts.next().unwrap().parse().unwrap();
    h * 3600.0 + m * 60.0 + s
}

fn sh_json(cmd: &str) -> String {
    serde_json::json!({"cmd": "sh", "args": ["-c", cmd]}).to_string()
}

/// A service's main process that dies leaves nothing of its process group behind: a crashed
/// `sh` must not leave its server holding the port the restart needs.
#[test]
fn what_a_crashed_service_started_in_its_group_goes_with_it() {
    each_runtime("svc-group", |s, _, rt| {
        create(s, "box");
        // First run: a background child, then a crash. The restart just sleeps.
        let script = "if [ -e \"$HOME/ran\" ]; then exec sleep 1000; fi; touch \"$HOME/ran\"; \
                      sleep 1000 & echo \"$!\" > \"$HOME/bg\"; exit 3";
        put(s, "box", "leaky", &sh_json(script), "0s");
        wait_until("the restart", || {
            let v = get(s, "box", "leaky");
            v["state"]["restart_count"] == 1 && status(&v) == "running"
        });
        let (bg, _, code) = sh(s.addr(), "box", "cat \"$HOME/bg\"");
        assert_eq!(code, 0);
        let bg: i32 = bg.trim().parse().unwrap();
        match rt {
            // Host pids; an orphan's zombie counts as gone.
            Runtime::Host => wait_until("the background child killed", || process_gone(bg)),
            // Pids in the sprite, whose init (the agent) reaps orphans.
            _ => wait_until("the background child killed", || {
                sh(s.addr(), "box", &format!("kill -0 {bg}")).2 != 0
            }),
        }
        // The restarted service runs on.
        let pid = get(s, "box", "leaky")["state"]["pid"].as_i64().unwrap();
        assert_eq!(sh(s.addr(), "box", &format!("kill -0 {pid}")).2, 0);
    });
}

#[test]
fn a_crashing_service_is_restarted_with_backoff_and_counted() {
    each_runtime("svc-crash", |s, _, _| {
        create(s, "box");
        let evs = put(s, "box", "crashy", &sh_json("echo up; exit 3"), "2500ms");
        // Backoff: 0.5 s after the first crash, then 1 s (the events carry the times).
        let ts = |kind: &str| -> Vec<u64> {
            evs.iter()
                .filter(|e| e["type"] == kind)
                .map(|e| e["timestamp"].as_u64().unwrap())
                .collect()
        };
        let (exits, starts) = (ts("exit"), ts("started"));
        assert!(exits.len() >= 2 && starts.len() >= 3, "{evs:?}");
        let gap = |i: usize| starts[i + 1] - exits[i];
        assert!(gap(0) >= 450, "first restart after {} ms", gap(0));
        assert!(gap(1) >= 950, "second restart after {} ms", gap(1));
        let k = kinds(&evs);
        assert_eq!(k.first().map(String::as_str), Some("started"), "{k:?}");
        assert!(k.contains(&"exit".to_owned()), "{k:?}");
        let exit = evs.iter().find(|e| e["type"] == "exit").unwrap();
        assert_eq!(exit["exit_code"], 3);
        assert!(exit["timestamp"].as_u64().unwrap() > 1_700_000_000_000);
        assert!(evs
            .iter()
            .any(|e| e["type"] == "stdout" && e["data"] == "up\n"));
        let complete = evs.last().unwrap();
        assert_eq!(complete["type"], "complete");
        assert!(complete["log_files"]["combined"]
            .as_str()
            .unwrap()
            .ends_with("/.sprite/logs/services/crashy.log"));
        // Backoff 0.5 s, then 1 s: within 2 s it was restarted at least twice.
        wait_until("two restarts", || {
            get(s, "box", "crashy")["state"]["restart_count"]
                .as_u64()
                .unwrap()
                >= 2
        });
        let v = get(s, "box", "crashy");
        if status(&v) == "failed" {
            assert!(v["state"]["next_restart_at"].is_string(), "{v}");
            assert_eq!(v["state"]["error"], "exited with code 3");
        }
        // A stop cancels the pending restart: it stays stopped.
        let stop = events(&http(s, "POST", &svc_path("box", "/crashy/stop"), None));
        assert_eq!(kinds(&stop).last().unwrap(), "complete");
        let count = get(s, "box", "crashy")["state"]["restart_count"].clone();
        std::thread::sleep(std::time::Duration::from_millis(1200));
        let v = get(s, "box", "crashy");
        assert_eq!(status(&v), "stopped", "{v}");
        assert_eq!(v["state"]["restart_count"], count);
    });
}

#[test]
fn stops_stick_and_services_come_back_in_needs_order_after_a_server_restart() {
    for rt in [Runtime::Host, Runtime::Sandbox] {
        let dir = TempDir::new("svc-restart");
        let Some(s) = server(&dir.0, rt) else {
            continue;
        };
        create(&s, "box");
        // Created in needs order (a need must exist), then started by the server itself.
        put(&s, "box", "db", &sh_json("exec sleep 1000"), "0s");
        let b = r#"{"cmd":"sleep","args":["1000"],"needs":["db"]}"#;
        put(&s, "box", "cache", b, "0s");
        let b = r#"{"cmd":"sleep","args":["1000"],"needs":["cache","db"]}"#;
        put(&s, "box", "web", b, "0s");
        put(&s, "box", "idle", &sh_json("exec sleep 1000"), "0s");
        let pid = get(&s, "box", "idle")["state"]["pid"].as_i64().unwrap();
        let stop = events(&http(
            &s,
            "POST",
            &svc_path("box", "/idle/stop?timeout=2s"),
            None,
        ));
        let k = kinds(&stop);
        assert_eq!(k, ["stopping", "exit", "stopped", "complete"], "{stop:?}");
        assert_eq!(stop[1]["exit_code"], 128 + 15, "TERM ended it: {stop:?}");
        if rt == Runtime::Host {
            wait_until("stopped process gone", || process_gone(pid as i32));
        }
        s.shutdown();

        let s = server(&dir.0, rt).unwrap();
        let v = get(&s, "box", "idle");
        assert_eq!(status(&v), "stopped", "{v}");
        assert!(v["state"]["pid"].is_null());
        let (db, cache, web) = (
            get(&s, "box", "db"),
            get(&s, "box", "cache"),
            get(&s, "box", "web"),
        );
        for v in [&db, &cache, &web] {
            assert_eq!(status(v), "running", "{v}");
        }
        assert!(started_secs(&db) <= started_secs(&cache), "{db} {cache}");
        assert!(started_secs(&cache) <= started_secs(&web), "{cache} {web}");
        let list = http(&s, "GET", &svc_path("box", ""), None).json();
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["cache", "db", "idle", "web"]);
        s.shutdown();
    }
}

#[test]
fn a_signal_reaches_the_process_and_logs_return_the_last_lines() {
    each_runtime("svc-signal", |s, dir, rt| {
        create(s, "box");
        let script =
            "trap 'echo got-hup' HUP; for i in 1 2 3 4 5 6 7 8 9 10; do echo line$i; done; \
                      while :; do sleep 1 & wait $!; done";
        put(s, "box", "sig", &sh_json(script), "0s");
        let logs = |q: &str| {
            events(&http(
                s,
                "GET",
                &svc_path("box", &format!("/sig/logs{q}")),
                None,
            ))
        };
        wait_until("ten lines", || {
            logs("?lines=1").iter().any(|e| e["data"] == "line10\n")
        });
        let last3 = logs("?lines=3");
        let data: Vec<&str> = last3
            .iter()
            .filter(|e| e["type"] == "stdout")
            .map(|e| e["data"].as_str().unwrap())
            .collect();
        assert_eq!(data, ["line8\n", "line9\n", "line10\n"]);
        assert_eq!(last3.last().unwrap()["type"], "complete");

        let r = http(
            s,
            "POST",
            &svc_path("box", "/signal"),
            Some(r#"{"name":"sig","signal":"HUP"}"#),
        );
        assert_eq!(r.status, 204, "{}", String::from_utf8_lossy(&r.body));
        wait_until("the trap ran", || {
            logs("?lines=5").iter().any(|e| e["data"] == "got-hup\n")
        });
        // Following: output written during the window arrives; the stream then ends.
        let r = http(
            s,
            "POST",
            &svc_path("box", "/signal"),
            Some(r#"{"name":"sig","signal":"SIGHUP"}"#),
        );
        assert_eq!(r.status, 204);
        assert_eq!(get(s, "box", "sig")["state"]["restart_count"], 0);

        // The log file inside the sprite (written by a process in the sprite, so it may
        // lag the stream by a moment).
        let read_log = || match rt {
            Runtime::Host => {
                std::fs::read_to_string(dir.join("sprites/box/.sprite/logs/services/sig.log"))
                    .unwrap_or_default()
            }
            _ => sh(s.addr(), "box", "cat /.sprite/logs/services/sig.log").0,
        };
        wait_until("the log file", || read_log().contains("got-hup"));
        let log = read_log();
        assert!(log.starts_with("line1\nline2\n"), "{log}");

        // TERM counts as a crash: restarted, counted.
        let r = http(
            s,
            "POST",
            &svc_path("box", "/signal"),
            Some(r#"{"name":"sig","signal":"TERM"}"#),
        );
        assert_eq!(r.status, 204);
        wait_until("restart after TERM", || {
            let v = get(s, "box", "sig");
            v["state"]["restart_count"] == 1 && status(&v) == "running"
        });
    });
}

#[test]
fn bad_input_conflicts_and_unknown_names() {
    let dir = TempDir::new("svc-errors");
    let s = server(&dir.0, Runtime::Host).unwrap();
    create(&s, "box");
    let code = |m: &str, p: &str, b: Option<&str>| {
        let r = http(&s, m, &svc_path("box", p), b);
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    };
    // Unknown sprite, unknown service.
    let r = http(&s, "GET", "/v1/sprites/ghost/services", None);
    assert_eq!(r.status, 404);
    for (m, p) in [
        ("GET", "/nope"),
        ("DELETE", "/nope"),
        ("POST", "/nope/start"),
        ("POST", "/nope/stop"),
        ("POST", "/nope/restart"),
        ("GET", "/nope/logs"),
    ] {
        let (st, body) = code(m, p, None);
        assert_eq!(st, 404, "{m} {p}: {body}");
        assert!(body.contains("service \\\"nope\\\" not found"), "{body}");
    }
    let (st, _) = code("POST", "/signal", Some(r#"{"name":"nope","signal":"HUP"}"#));
    assert_eq!(st, 404);
    // Bad bodies and names: 400 with a message.
    for (p, b, why) in [
        ("/web", "{}", "cmd is required"),
        ("/web", "not json", "not valid JSON"),
        ("/web", r#"{"cmd":"x","http_port":70000}"#, "not a port"),
        (
            "/web",
            r#"{"cmd":"x","needs":["ghost"]}"#,
            "unknown service",
        ),
        ("/.web", r#"{"cmd":"x"}"#, "invalid service name"),
        ("/web?duration=5parsecs", r#"{"cmd":"x"}"#, "not a duration"),
    ] {
        let (st, body) = code("PUT", p, Some(b));
        assert_eq!(st, 400, "{p} {b}: {body}");
        assert!(body.contains(why), "{body}");
    }
    for (b, why) in [
        (r#"{"signal":"HUP"}"#, "name is required"),
        (r#"{"name":"web"}"#, "signal is required"),
        (r#"{"name":"web","signal":"BOGUS"}"#, "unknown signal"),
    ] {
        let (st, body) = code("POST", "/signal", Some(b));
        assert_eq!(st, 400, "{b}: {body}");
        assert!(body.contains(why), "{body}");
    }
    let (st, body) = code("GET", "/web/logs?lines=-1", None);
    assert_eq!(st, 400, "{body}");
    // One http_port per sprite.
    put(
        &s,
        "box",
        "web",
        r#"{"cmd":"sleep","args":["1000"],"http_port":8080}"#,
        "0s",
    );
    let (st, body) = code("PUT", "/api", Some(r#"{"cmd":"true","http_port":8081}"#));
    assert_eq!(st, 409, "{body}");
    assert!(body.contains("another service already has an HTTP port configured"));
    // Updating the service that has it keeps working.
    let evs = put(
        &s,
        "box",
        "web",
        r#"{"cmd":"sleep","args":["999"],"http_port":8081}"#,
        "0s",
    );
    assert_eq!(
        kinds(&evs),
        ["stopping", "exit", "stopped", "started", "complete"]
    );
    let v = get(&s, "box", "web");
    assert_eq!(v["http_port"], 8081);
    assert_eq!(v["args"][0], "999");
    // Not running: stop and signal are 409.
    put(&s, "box", "once", r#"{"cmd":"true"}"#, "0s");
    wait_until("once exited", || {
        status(&get(&s, "box", "once")) == "stopped"
    });
    let (st, _) = code("POST", "/once/stop", None);
    assert_eq!(st, 409);
    let (st, _) = code("POST", "/signal", Some(r#"{"name":"once","signal":"HUP"}"#));
    assert_eq!(st, 409);
    // A program that does not exist: an error event, status failed.
    let evs = put(&s, "box", "missing", r#"{"cmd":"/no/such/program"}"#, "0s");
    let error = evs
        .iter()
        .find(|e| e["type"] == "error")
        .expect("an error event");
    assert_eq!(error["data"], "/no/such/program: command not found");
    let v = get(&s, "box", "missing");
    assert_eq!(status(&v), "failed");
    assert_eq!(v["state"]["error"], "/no/such/program: command not found");
    // Delete: a needed service is 409; then 204, then 404.
    put(
        &s,
        "box",
        "front",
        r#"{"cmd":"sleep","args":["1000"],"needs":["web"]}"#,
        "0s",
    );
    let (st, body) = code("DELETE", "/web", None);
    assert_eq!(st, 409, "{body}");
    let (st, _) = code("DELETE", "/front", None);
    assert_eq!(st, 204);
    let (st, _) = code("GET", "/front", None);
    assert_eq!(st, 404);
    // Deleting the sprite ends its services.
    let pid = get(&s, "box", "web")["state"]["pid"].as_i64().unwrap() as i32;
    assert_eq!(http(&s, "DELETE", "/v1/sprites/box", None).status, 204);
    wait_until("service process gone", || process_gone(pid));
    s.shutdown();
}

#[test]
fn logs_rotate_at_one_mebibyte_and_a_sprite_holds_at_most_16_services() {
    each_runtime("svc-rotate", |s, dir, rt| {
        create(s, "box");
        // 1 MiB + 100 KiB of output, then a marker: the file is rotated once on the way.
        let script = "head -c 1153434 /dev/zero | tr '\\0' x; echo; echo after-rotation; \
                      exec sleep 1000";
        put(s, "box", "big", &sh_json(script), "0s");
        let size = |name: &str| -> Option<u64> {
            match rt {
                Runtime::Host => {
                    std::fs::metadata(dir.join(format!("sprites/box/.sprite/logs/services/{name}")))
                        .ok()
                        .map(|m| m.len())
                }
                _ => {
                    let (out, _, code) = sh(
                        s.addr(),
                        "box",
                        &format!("wc -c < /.sprite/logs/services/{name}"),
                    );
                    (code == 0).then(|| out.trim().parse().unwrap())
                }
            }
        };
        // Every byte, in the two files: 1 153 434 x, "\n", "after-rotation\n".
        let total = 1_153_434 + 1 + 15;
        wait_until(
            &format!("the whole output in the rotated log ({rt})"),
            || size("big.log.1").unwrap_or(0) + size("big.log").unwrap_or(0) == total,
        );
        let (old, new) = (size("big.log.1").unwrap(), size("big.log").unwrap());
        assert!(old >= 1 << 20, "rotated at {old} bytes");
        assert!(old < (1 << 20) + 64 * 1024, "rotated late: {old} bytes");
        assert!(new < 1 << 20, "{new}");
        // The cap: 16 services, the 17th is refused.
        for i in 1..16 {
            put(
                s,
                "box",
                &format!("s{i}"),
                r#"{"cmd":"sleep","args":["1000"]}"#,
                "0s",
            );
        }
        let r = http(
            s,
            "PUT",
            &svc_path("box", "/s16?duration=0s"),
            Some(r#"{"cmd":"true"}"#),
        );
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
        assert!(String::from_utf8_lossy(&r.body).contains("at most 16 services"));
        // Replacing one of the 16 is still allowed.
        put(s, "box", "s1", r#"{"cmd":"sleep","args":["999"]}"#, "0s");
        let list = http(s, "GET", &svc_path("box", ""), None).json();
        assert_eq!(list.as_array().unwrap().len(), 16);
    });
}
