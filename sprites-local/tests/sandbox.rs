//! End-to-end tests of the sandbox runtime: a real server (in-process, or the CLI as an
//! unprivileged user) on loopback, driven with raw HTTP and a tungstenite client. Each test
//! is skipped, with the reason printed, where the kernel cannot create the sandbox.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use sprites_local::{Runtime, Server};
use tungstenite::Message;

/// The PID namespace (as `pid:[inode]`) of host process `pid`.
fn pid_ns(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/pid"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// Host pids of live (non-zombie) processes in PID namespace `ns`.
fn processes_in(ns: &str) -> Vec<i32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let link = std::fs::read_link(format!("/proc/{pid}/ns/pid"));
        if link.is_ok_and(|l| l.to_string_lossy() == ns) && !process_gone(pid) {
            v.push(pid);
        }
    }
    v
}

#[test]
fn auto_picks_the_sandbox_where_it_works() {
    let dir = TempDir::new("auto");
    let s = Server::builder()
        .token("secret")
        .data_dir(&dir.0)
        .start()
        .unwrap();
    let note = s.runtime_note();
    println!("{note}");
    if s.runtime() == Runtime::Host {
        assert!(note.contains("auto: sandbox unavailable"), "{note}");
        eprintln!("SKIPPED: {note}");
        return;
    }
    assert_eq!(s.runtime(), Runtime::Sandbox);
    assert!(note.starts_with("runtime sandbox (auto: "), "{note}");
}

#[test]
fn identity_environment_and_secrets() {
    let Some((s, dir)) = start("ident") else {
        return;
    };
    let a = s.addr();
    create(a, "box");
    assert_eq!(ok(a, "box", "id -un"), "sprite");
    assert_eq!(ok(a, "box", "id -gn"), "sprite");
    assert_eq!(ok(a, "box", "pwd"), "/home/sprite");
    assert_eq!(
        ok(a, "box", "echo $HOME $USER $LOGNAME $LANG"),
        "/home/sprite sprite sprite C.UTF-8"
    );
    assert!(ok(a, "box", "echo $PATH").contains("/usr/bin"));
    assert_eq!(ok(a, "box", "hostname"), "box");
    // Nothing of the server's environment leaks (cargo sets CARGO_* for this process).
    let env = ok(a, "box", "env");
    assert!(
        !env.contains("CARGO") && !env.contains("SPRITES_LOCAL"),
        "{env}"
    );
    let (_, err, code) = sh(a, "box", "cat /etc/shadow");
    assert_ne!(code, 0, "/etc/shadow must be unreadable");
    assert!(err.contains("Permission denied"), "{err}");
    // No capabilities; `no_new_privs` is left unset so that `sudo` works (root inside is
    // the sprite's own, see tests/confinement.rs).
    let status = ok(
        a,
        "box",
        "grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status",
    );
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("CapPrm:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t0"), "{status}");
    // The data dir (with the token-free metadata and every sprite's layers) is masked,
    // and no process environment inside holds the token.
    let data = dir.0.canonicalize().unwrap();
    let seen = ok(
        a,
        "box",
        &format!("test -e {}/sprites && echo VISIBLE || true", data.display()),
    );
    assert_eq!(seen, "", "data dir visible inside");
    let (out, _, _) = sh(a, "box", "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'");
    assert!(!out.contains("secret"), "{out}");
    assert_eq!(ok(a, "box", "ls -A /home"), "sprite");
    assert_eq!(
        ok(a, "box", "ls -A /root 2>&1 || true"),
        "ls: cannot open directory '/root': Permission denied"
    );
}

#[test]
fn sprites_are_isolated_from_each_other_and_the_host() {
    let Some((s, dir)) = start("iso") else {
        return;
    };
    let a = s.addr();
    create(a, "one");
    create(a, "two");
    let tag = random_hex();
    let host_mark = PathBuf::from(format!("/tmp/sprites-local-host-{tag}"));
    std::fs::write(&host_mark, "host").unwrap();
    ok(
        a,
        "one",
        &format!("echo one > ~/f-{tag} && echo t > /tmp/t-{tag}"),
    );
    assert_eq!(ok(a, "one", &format!("cat ~/f-{tag}")), "one");
    let (_, _, code) = sh(a, "two", &format!("cat ~/f-{tag} || cat /tmp/t-{tag}"));
    assert_ne!(code, 0, "a file of sprite one is visible in sprite two");
    // Each sprite has its own /tmp: the host's is invisible.
    let (_, _, code) = sh(a, "one", &format!("cat {}", host_mark.display()));
    assert_ne!(code, 0, "the host's /tmp is visible");
    // On the host, the file exists only inside the sprite's disk image (or, where there
    // are none, its upper layer in the data dir).
    assert!(!Path::new(&format!("/home/sprite/f-{tag}")).exists());
    assert!(!Path::new(&format!("/tmp/t-{tag}")).exists());
    let sprite = dir.join("sprites/one");
    assert!(
        sprite.join("disk.img").exists() || sprite.join("upper/home/sprite").exists(),
        "the sprite's files are not in the data dir"
    );
    let _ = std::fs::remove_file(host_mark);
}

#[test]
fn ps_shows_only_the_sprites_processes() {
    let Some((s, _dir)) = start("ps") else {
        return;
    };
    let a = s.addr();
    create(a, "box");
    let out = ok(a, "box", "ps -e -o pid=,comm=");
    let pids: Vec<i32> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    // The agent (PID 1), the shell and ps; nothing of the host's.
    assert!(pids.contains(&1), "{out}");
    assert!(pids.len() <= 3, "{out}");
    let n: usize = ok(a, "box", "ls /proc | grep -c '^[0-9]'").parse().unwrap();
    assert!(n <= 4, "{n} processes visible"); // agent, sh, ls, grep
}

#[test]
fn escapes_fail() {
    let Some((s, dir)) = start("escape") else {
        return;
    };
    let a = s.addr();
    create(a, "box");
    let data = dir.0.canonicalize().unwrap();
    // `..` stops at the sprite's root.
    assert_eq!(
        ok(a, "box", "cd / && cd ../../.. && pwd && ls -A /home"),
        "/\nsprite"
    );
    // A symlink to / resolves inside.
    assert_eq!(ok(a, "box", "ln -s / ~/up && ls -A ~/up/home"), "sprite");
    // /proc/1/root is the sprite's root (and the sprite user may not even look).
    let (out, _, _) = sh(a, "box", "ls -A /proc/1/root/home 2>&1");
    assert!(
        out.trim() == "sprite" || out.contains("Permission denied"),
        "{out}"
    );
    for (what, script) in [
        ("chroot", "chroot / true"),
        ("mount", "mount -t tmpfs none /tmp"),
        (
            "bind mount of the data dir",
            &format!("mount --bind {} /tmp", data.display()),
        ),
        ("write to /etc", "echo x > /etc/sprites-local-test"),
        (
            "kill a host pid",
            &format!("kill -9 {}", std::process::id()),
        ),
    ] {
        let (out, err, code) = sh(a, "box", script);
        assert_ne!(code, 0, "{what} succeeded: {out} {err}");
    }
    // A host pid means nothing inside; we are alive.
    assert!(Path::new(&format!("/proc/{}", std::process::id())).exists());
}

#[test]
fn data_survives_a_restart() {
    let Some((s, dir)) = start("restart") else {
        return;
    };
    create(s.addr(), "box");
    ok(
        s.addr(),
        "box",
        "echo kept > ~/kept && mkdir -p ~/d && echo t > /tmp/t",
    );
    s.shutdown();
    let s = start_in(&dir.0).unwrap();
    assert_eq!(ok(s.addr(), "box", "cat ~/kept /tmp/t"), "kept\nt");
}

#[test]
fn delete_kills_every_process_and_removes_the_files() {
    let Some((s, dir)) = start("delete") else {
        return;
    };
    let a = s.addr();
    create(a, "box");
    // A daemon that outlives its exec, plus a running exec.
    ok(a, "box", "setsid sleep 1000 > /dev/null 2>&1 < /dev/null &");
    let (mut ws, _, leader) = connect_on_host(a, "box", &["sleep", "1000"]);
    let ns = pid_ns(leader);
    assert_ne!(ns, pid_ns(std::process::id()));
    assert!(processes_in(&ns).len() >= 3, "agent, daemon and exec");
    let r = http(a, "DELETE", "/v1/sprites/box", None);
    assert_eq!(r.status, 204);
    // Nothing of the sprite is left the moment DELETE answered.
    assert_eq!(processes_in(&ns), Vec::<i32>::new());
    assert!(!dir.join("sprites/box").exists());
    assert_eq!(exit_code(&mut ws), 128 + 9);
}

#[test]
fn agent_restarts_and_shutdown_ends_sprites() {
    let Some((s, _dir)) = start("agent") else {
        return;
    };
    let a = s.addr();
    create(a, "box");
    let (mut ws, _, leader) = connect_on_host(a, "box", &["sleep", "1000"]);
    let ns = pid_ns(leader);
    // Kill the agent (PID 1 of the sprite) from the host: the exec ends with 137 and the
    // next exec starts a new agent.
    let agent = processes_in(&ns)
        .into_iter()
        .find(|p| {
            std::fs::read_to_string(format!("/proc/{p}/status"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1"))
        })
        .expect("agent");
    // SAFETY: kill with plain integers.
    unsafe {
        libc::kill(agent, libc::SIGKILL);
    }
    assert_eq!(exit_code(&mut ws), 137);
    assert_eq!(ok(a, "box", "echo again"), "again");
    let (_exec, _, leader) = connect_on_host(a, "box", &["sleep", "1000"]);
    let ns = pid_ns(leader);
    s.shutdown();
    let left: Vec<String> = processes_in(&ns)
        .iter()
        .map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default())
        .collect();
    assert!(left.is_empty(), "{left:#?}");
}

/// Session ids are pids as the sprite sees them (what `$$` is inside, what `kill` takes
/// there), as on a sprite of its own VM. Each sprite has its own PID namespace, so two sprites
/// can have sessions with the same id; each sprite's list, kill and attach find its own.
#[test]
fn session_ids_are_pids_in_the_sprite_and_repeat_across_sprites() {
    let Some((s, _dir)) = start("session-ids") else {
        return;
    };
    let a = s.addr();
    create(a, "one");
    create(a, "two");
    let script = ["sh", "-c", "echo $$; exec sleep 1000"];
    let first_line = |ws: &mut Ws| -> String {
        let mut out = Vec::new();
        while !out.contains(&b'\n') {
            match ws.read().unwrap() {
                Message::Binary(b) if b[0] == 1 => out.extend_from_slice(&b[1..]),
                Message::Binary(b) => panic!("{b:?}"),
                _ => {}
            }
        }
        String::from_utf8(out).unwrap().trim().to_owned()
    };
    let (mut in_one, id, _) = connect_on_host(a, "one", &script);
    assert_eq!(first_line(&mut in_one), id, "$$ inside is the session id");
    // Execs in `two` until one gets the same id (pids go up one by one in a fresh sprite).
    let mut in_two = None;
    for _ in 0..50 {
        let (mut ws, other, _) = connect_on_host(a, "two", &script);
        let (other, wanted): (u32, u32) = (other.parse().unwrap(), id.parse().unwrap());
        assert!(
            other <= wanted,
            "sprite two's pids passed {wanted}: {other}"
        );
        if other == wanted {
            in_two = Some(ws);
            break;
        }
        assert_eq!(first_line(&mut ws), other.to_string());
        let _ = ws.close(None);
        assert_eq!(exit_code(&mut ws), 128 + 9);
    }
    let mut in_two = in_two.expect("an exec in sprite two with the same id");
    for sprite in ["one", "two"] {
        let list = http(a, "GET", &format!("/v1/sprites/{sprite}/exec"), None).json();
        let ids: Vec<&str> = list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["id"].as_str())
            .collect();
        assert_eq!(ids, [id.as_str()], "{sprite}: {list}");
    }
    // Killing sprite two's session leaves sprite one's running.
    let kill = format!("/v1/sprites/two/exec/{id}/kill?signal=KILL&timeout=0s");
    assert_eq!(http(a, "POST", &kill, None).status, 200);
    assert_eq!(exit_code(&mut in_two), 128 + 9);
    let list = http(a, "GET", "/v1/sprites/one/exec", None).json();
    assert_eq!(list["sessions"][0]["id"], id.as_str(), "{list}");
    let kill = format!("/v1/sprites/one/exec/{id}/kill?signal=KILL&timeout=0s");
    assert_eq!(http(a, "POST", &kill, None).status, 200);
    assert_eq!(exit_code(&mut in_one), 128 + 9);
}

/// A sprite's cgroups (its CPU weight and limits) go with it, even when its server is killed
/// and cannot remove them: the sprite's helper, the last of it to end, does.
#[test]
fn a_killed_servers_sprites_leave_no_cgroups_behind() {
    if start("cgroups-probe").is_none() {
        return;
    }
    let mut s = ServerProcess::start_with(&["--runtime", "sandbox"], None);
    let name = format!("cg{}", &random_hex()[..8]);
    create(&s, &name);
    assert_eq!(ok(s.addr, &name, "echo up"), "up");
    // Each cgroup is `<parent>/sprites-local-<name>-<hash>`; the parents are in the limits.
    let info = http(&s, "GET", &format!("/v1/sprites/{name}"), None).json();
    let limits = info["resource_limits"].as_str().unwrap().to_owned();
    let parents: Vec<&str> = limits
        .split("under ")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .collect();
    let prefix = format!("sprites-local-{name}-");
    let cgroups = || -> Vec<String> {
        parents
            .iter()
            .flat_map(|p| std::fs::read_dir(p).into_iter().flatten().flatten())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&prefix))
            .collect()
    };
    if cgroups().is_empty() {
        assert!(
            !cpu_cgroup_possible(),
            "this machine offers a cpu cgroup and the sprite has none: {limits}"
        );
        eprintln!("SKIPPED: sprites get no cgroup here ({limits})");
        return;
    }
    // The server's check that it may make cgroups there left nothing either.
    let probe = format!("sprites-local-probe-{}", s.child.id());
    for p in &parents {
        assert!(!Path::new(p).join(&probe).exists(), "{p}/{probe}");
    }
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    wait_until("the sprite's cgroups removed", || cgroups().is_empty());
}

#[test]
fn exec_errors_match_the_host_runtime() {
    let Some((s, _dir)) = start("errors") else {
        return;
    };
    let a = s.addr();
    create(a, "box");
    let e = try_connect(a, "box", &q(&["no-such-program-xyz"])).unwrap_err();
    assert!(e.contains("400"), "{e}");
    let e = try_connect(a, "box", &format!("{}&dir=/nope", q(&["true"]))).unwrap_err();
    assert!(e.contains("400"), "{e}");
    // A file that is not executable: the child's execve fails with EACCES.
    assert_eq!(ok(a, "box", "printf x > ~/plain && chmod 644 ~/plain"), "");
    let e = try_connect(a, "box", &q(&["/home/sprite/plain"])).unwrap_err();
    assert!(e.contains("400"), "{e}");
    assert_eq!(ok(a, "box", "mkdir -p ~/sub && echo hi > ~/sub/x"), "");
    let mut ws = connect(a, "box", &format!("{}&dir=sub", q(&["cat", "x"])));
    assert_eq!(collect(&mut ws).stdout, b"hi\n");
    let mut ws = connect(
        a,
        "box",
        &format!("{}&env=A%3D1&env=A%3D2", q(&["sh", "-c", "echo $A"])),
    );
    assert_eq!(collect(&mut ws).stdout, b"2\n");
    // stdin round trip.
    let mut ws = connect(a, "box", &format!("{}&stdin=true", q(&["cat"])));
    ws.send(Message::Binary(b"\x00ping".to_vec().into()))
        .unwrap();
    ws.send(Message::Binary(b"\x04".to_vec().into())).unwrap();
    assert_eq!(collect(&mut ws).stdout, b"ping");
}

#[test]
fn unprivileged_server_uses_a_user_namespace() {
    if std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: setpriv not installed");
        return;
    }
    let dir = TempDir::new("unpriv");
    let base = dir.join("base");
    tiny_base(&base);
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
    // The test dir itself must be traversable by uid 65534.
    std::fs::set_permissions(&dir.0, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    // With the host's / as base, `auto` names its choice and reason either way.
    let auto = Unprivileged::start(&data, &[]);
    println!("unprivileged auto: {:?}", auto.lines);
    assert!(
        auto.lines.get(1).is_some_and(|l| l.contains("(auto: ")),
        "{:?}",
        auto.lines
    );
    drop(auto);

    let base_arg = base.to_string_lossy().into_owned();
    let srv = Unprivileged::start(&data, &["--runtime", "sandbox", "--base-dir", &base_arg]);
    let Some(a) = srv.addr() else {
        eprintln!(
            "SKIPPED: the kernel refuses an unprivileged sandbox: {:?}",
            srv.lines
        );
        return;
    };
    println!("unprivileged sandbox: {:?}", srv.lines);
    assert!(srv.lines[1].contains("user namespace"), "{:?}", srv.lines);
    create(a, "box");
    assert_eq!(
        ok(a, "box", "id -u; id -un; pwd"),
        "1000\nsprite\n/home/sprite"
    );
    let (_, _, code) = sh(a, "box", "cat /etc/shadow");
    assert_ne!(code, 0, "/etc/shadow readable");
    ok(a, "box", "echo hi > ~/f");
    // Inside it is uid 1000; on the host the file belongs to the server's uid.
    let f = data.join("sprites/box/upper/home/sprite/f");
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "hi\n");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&f.metadata().unwrap()),
        65534
    );
    // Files of the host's root show up as unmapped (nobody) and stay read-only.
    assert_eq!(ok(a, "box", "stat -c %u /bin/dash"), "65534");
    let (_, _, code) = sh(a, "box", "echo x > /bin/new");
    assert_ne!(code, 0, "wrote into a root-owned base directory");
    let status = ok(a, "box", "cat /proc/self/status");
    assert!(status.contains("CapEff:\t0000000000000000"), "{status}");
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    // The filesystem API runs inside too, as the same user.
    assert_eq!(fs_write(a, "box", "/home/sprite/g", "fs").status, 200);
    assert_eq!(ok(a, "box", "cat ~/g; stat -c %u ~/g"), "fs1000");
    assert_eq!(fs_read(a, "box", "/home/sprite/f").body, b"hi\n");
    assert_eq!(fs_write(a, "box", "/bin/new", "x").status, 403);
    let g = data.join("sprites/box/upper/home/sprite/g");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&g.metadata().unwrap()),
        65534
    );
}

fn fs_write(s: SocketAddr, sprite: &str, path: &str, body: &str) -> Resp {
    http(
        s,
        "PUT",
        &write_target(sprite, path, "&mkdirParents=true"),
        Some(body),
    )
}

fn fs_read(s: SocketAddr, sprite: &str, path: &str) -> Resp {
    http(s, "GET", &read_target(sprite, path), None)
}

fn json(r: &Resp) -> serde_json::Value {
    r.json()
}

/// Names in a (non-recursive) listing of `path`.
fn fs_names(s: SocketAddr, sprite: &str, path: &str) -> Vec<String> {
    let r = http(
        s,
        "GET",
        &format!("/v1/sprites/{sprite}/fs/list?path={}", enc(path)),
        None,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    json(&r)["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn fs_operations_run_inside_the_sprite() {
    let Some((s, _dir)) = start("fsops") else {
        return;
    };
    let a = s.addr();
    create(a, "one");
    create(a, "two");
    let tag = random_hex();
    // The first use of the sprite is a filesystem call: it starts the agent.
    let r = fs_write(a, "one", "/home/sprite/d/a.txt", "hello");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json(&r)["size"], 5);
    let r = fs_read(a, "one", "/home/sprite/d/a.txt");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
    // An exec of the same sprite sees it, owned by the sprite user.
    assert_eq!(ok(a, "one", "cat ~/d/a.txt"), "hello");
    assert_eq!(
        ok(a, "one", "stat -c %u ~/d/a.txt; id -u"),
        ok(a, "one", "id -u; id -u")
    );
    let r = http(
        a,
        "POST",
        "/v1/sprites/one/fs/chmod",
        Some(r#"{"path":"/home/sprite/d/a.txt","mode":"0600"}"#),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(ok(a, "one", "stat -c %a ~/d/a.txt"), "600");
    let r = http(
        a,
        "POST",
        "/v1/sprites/one/fs/rename",
        Some(r#"{"source":"/home/sprite/d/a.txt","dest":"/home/sprite/d/b.txt"}"#),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json(&r)["dest"], "/home/sprite/d/b.txt");
    let r = http(
        a,
        "POST",
        "/v1/sprites/one/fs/copy",
        Some(r#"{"source":"/home/sprite/d","dest":"/tmp/e","recursive":true}"#),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json(&r)["totalBytes"], 5);
    assert_eq!(fs_names(a, "one", "/tmp/e"), ["b.txt"]);
    assert_eq!(ok(a, "one", "cat /tmp/e/b.txt"), "hello");
    let r = http(
        a,
        "DELETE",
        "/v1/sprites/one/fs/delete?path=/home/sprite/d&recursive=true",
        None,
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(fs_read(a, "one", "/home/sprite/d/b.txt").status, 404);
    let (_, _, code) = sh(a, "one", "test -e ~/d");
    assert_ne!(code, 0, "deleted directory still there");
    // As the sprite user: the base layer's root-owned files stay read-only.
    let r = fs_write(a, "one", "/etc/sprites-local-test", "x");
    assert_eq!(r.status, 403, "{}", String::from_utf8_lossy(&r.body));
    // Another sprite and the host see none of it; the bytes live in the data dir.
    let name = format!("/tmp/fs-{tag}");
    assert_eq!(fs_write(a, "one", &name, "mine").status, 200);
    assert_eq!(ok(a, "one", &format!("cat {name}")), "mine");
    assert_eq!(fs_read(a, "two", &name).status, 404);
    let (_, _, code) = sh(a, "two", &format!("cat {name}"));
    assert_ne!(code, 0, "sprite two sees sprite one's file");
    assert!(!Path::new(&name).exists(), "written on the host");
}

#[test]
fn fs_paths_and_symlinks_cannot_leave_the_sprite() {
    let Some((s, dir)) = start("fsesc") else {
        return;
    };
    let a = s.addr();
    create(a, "box");
    let data = dir.0.canonicalize().unwrap();
    let tag = random_hex();
    // The same path on the host and in the sprite, with different contents.
    let name = format!("/tmp/esc-{tag}");
    std::fs::write(&name, "host").unwrap();
    let secret = data.join(format!("secret-{tag}"));
    std::fs::write(&secret, "data dir").unwrap();
    ok(
        a,
        "box",
        &format!(
            "printf sprite > {name} && cd ~ && ln -s / escape && ln -s {} data && \
             ln -s loop2 loop1 && ln -s loop1 loop2",
            data.display()
        ),
    );
    let read = |p: &str| fs_read(a, "box", p);
    // Through a symlink to /, `..` and /proc: always the sprite's file.
    for p in [
        format!("/home/sprite/escape{name}"),
        format!("/home/sprite/escape/../../..{name}"),
        format!("../../../../..{name}"),
        format!("/proc/self/root{name}"),
    ] {
        let r = read(&p);
        assert_eq!((r.status, r.body.as_slice()), (200, &b"sprite"[..]), "{p}");
    }
    let r = read(&format!("/proc/1/root{name}"));
    assert!(
        r.status == 403 || r.body == b"sprite",
        "/proc/1/root: {} {}",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    // The data dir is masked inside: neither a symlink to it nor its path reaches it.
    for p in [
        format!("/home/sprite/data/secret-{tag}"),
        format!("{}/secret-{tag}", data.display()),
        format!("/home/sprite/escape{}/secret-{tag}", data.display()),
    ] {
        let r = read(&p);
        assert_ne!(r.status, 200, "{p}: {}", String::from_utf8_lossy(&r.body));
    }
    // The agent's own fds (its log is a host file) are not reachable through /proc.
    for fd in 0..8 {
        let r = read(&format!("/proc/self/fd/{fd}"));
        assert!(
            r.status != 200 || r.body.is_empty(),
            "fd {fd}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    // Nor can an exec's: it holds only its stdio (and `ls`'s own directory fd), never the
    // agent's control socket, over which it could intercept requests.
    assert_eq!(ok(a, "box", "ls /proc/self/fd"), "0\n1\n2\n3");
    // A symlink loop is ELOOP, not a hang.
    let r = read("/home/sprite/loop1");
    assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(json(&r)["code"], "ELOOP");
    // Writes through the same links land inside the sprite too.
    assert_eq!(
        fs_write(a, "box", &format!("/home/sprite/escape{name}"), "fs").status,
        200
    );
    assert_eq!(ok(a, "box", &format!("cat {name}")), "fs");
    let r = fs_write(a, "box", &format!("/home/sprite/data/secret-{tag}"), "x");
    assert_ne!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = http(
        a,
        "POST",
        "/v1/sprites/box/fs/copy",
        Some(&format!(
            r#"{{"source":"{}/secret-{tag}","dest":"/tmp/stolen"}}"#,
            data.display()
        )),
    );
    assert_ne!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(std::fs::read_to_string(&name).unwrap(), "host");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "data dir");
    let _ = std::fs::remove_file(&name);
}

#[test]
fn a_cut_fs_write_leaves_no_torn_file() {
    let Some((s, _dir)) = start("fscut") else {
        return;
    };
    let a = s.addr();
    create(a, "box");
    assert_eq!(fs_write(a, "box", "/home/sprite/w/keep", "old").status, 200);
    let mut c = TcpStream::connect(a).unwrap();
    write!(
        c,
        "PUT /v1/sprites/box/fs/write?path=/home/sprite/w/keep HTTP/1.1\r\nHost: x\r\n\
         Authorization: Bearer secret\r\nContent-Length: 100000\r\n\r\n"
    )
    .unwrap();
    c.write_all(&[b'N'; 4096]).unwrap();
    c.flush().unwrap();
    c.shutdown(std::net::Shutdown::Both).unwrap();
    drop(c);
    // The server removes the temp file (inside the sprite) once it sees the cut.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let names = fs_names(a, "box", "/home/sprite/w");
        if names == ["keep"] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "temp files left: {names:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ok(a, "box", "cat ~/w/keep"), "old");
}

/// Exec children share the agent's memory until their `execve` (`spawn_vfork`): whatever one
/// left allocated would be the agent's leak, once per exec. The sprite sees the agent as its
/// PID 1; its data size must not grow over many execs.
#[test]
fn execs_leave_nothing_allocated_in_the_agent() {
    let Some((s, _dir)) = start("agent-memory") else {
        return;
    };
    let a = s.addr();
    create(a, "box");
    let data_kib = || -> u64 {
        let status = ok(a, "box", "grep VmData /proc/1/status");
        status
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no VmData in {status:?}"))
    };
    // Warm up: the allocator takes its first arenas.
    for _ in 0..50 {
        ok(a, "box", "true");
    }
    let before = data_kib();
    for _ in 0..1500 {
        ok(a, "box", "true");
    }
    let after = data_kib();
    // 100 bytes left per exec would be ~150 KiB; the allocator's own slack is far less.
    assert!(
        after <= before + 64,
        "the agent's data grew from {before} KiB to {after} KiB over 1 500 execs"
    );
}
