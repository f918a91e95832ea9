//! End to end: `Filesystem::chown`/`chown_recursive` and `Filesystem::watch` against a real
//! `sprites-local` (either runtime: `SPRITES_TEST_RUNTIME=sandbox`). Changes are made by
//! commands in the sprite and checked with `stat` there.

// sprites-local, which these tests drive, runs on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::{Local, test_runtime};
use sprites::Sprite;
use sprites::fs::{EventKind, Filesystem, FsWatch, ModifyKind, RenameMode, WatchEvent};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a change may take to arrive.
const ARRIVE: Duration = Duration::from_secs(20);

/// A fresh directory inside the sprite's home, and a filesystem rooted there.
fn scratch(local: &Local, tag: &str) -> (Sprite, Filesystem, String) {
    let sprite = local.sprite(tag);
    let dir = sh(
        &sprite,
        "d=\"$HOME/work\"; mkdir -p \"$d\"; printf %s \"$d\"",
        "/",
    );
    let fs = sprite.fs_at(&dir);
    (sprite, fs, dir)
}

/// Runs `script` with `sh -c` in `dir`; its stdout (asserting success).
fn sh(sprite: &Sprite, script: &str, dir: &str) -> String {
    let out = sprite
        .command("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sandbox() -> bool {
    test_runtime() == sprites_local::Runtime::Sandbox
}

#[test]
fn chown_changes_the_owner_stat_sees() {
    let local = Local::start();
    let (sprite, fs, dir) = scratch(&local, "chown");
    sh(
        &sprite,
        "echo hi > f && mkdir -p t/u && touch t/a t/u/b && ln -s f t/link",
        &dir,
    );
    let mine = sh(&sprite, "stat -c %u:%g f", &dir);
    if sandbox() {
        assert_eq!(
            mine.trim(),
            "1000:1000",
            "the sandbox's exec user is sprite"
        );
    }
    fs.chown("f", Some(1234), Some(1235)).unwrap();
    assert_eq!(sh(&sprite, "stat -c %u:%g f", &dir).trim(), "1234:1235");
    fs.chown("f", None, Some(7)).unwrap();
    assert_eq!(sh(&sprite, "stat -c %u:%g f", &dir).trim(), "1234:7");

    fs.chown_recursive("t", Some(1000), Some(1000)).unwrap();
    let owners = sh(&sprite, "find t -printf '%U:%G %p\\n' | sort", &dir);
    assert_eq!(owners.lines().count(), 5, "{owners}");
    assert!(
        owners.lines().all(|l| l.starts_with("1000:1000 ")),
        "{owners}"
    );
    // The link below was changed itself; its target (outside the tree) was not.
    assert_eq!(sh(&sprite, "stat -c %u:%g f", &dir).trim(), "1234:7");

    let err = fs.chown("missing", Some(0), None).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    let api = sprites::Error::from_io(&err)
        .and_then(|e| e.api())
        .expect("an API error");
    assert_eq!(api.code.as_deref(), Some("ENOENT"), "{api:?}");
    let err = fs.chown("f", None, None).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
}

#[test]
fn a_symlink_to_a_host_path_cannot_make_chown_or_watch_touch_the_host() {
    if !sandbox() {
        eprintln!("SKIPPED: the host runtime isolates nothing (its paths are the host's)");
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let local = Local::start();
    let (sprite, fs, dir) = scratch(&local, "escape");
    // A host directory and file the sprite must not reach, owned by the test's user.
    let host = local.dir.path().join("host-secret");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("file"), "x").unwrap();
    let before = std::fs::metadata(host.join("file")).unwrap();
    let h = host.to_str().unwrap();
    sh(
        &sprite,
        &format!("ln -s {h}/file flink && ln -s {h} dlink && mkdir t && ln -s {h} t/in"),
        &dir,
    );

    // Followed inside the sprite's root, where that path does not exist.
    let err = fs.chown("flink", Some(1234), Some(1234)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    let err = fs
        .chown_recursive("dlink", Some(1234), Some(1234))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    fs.chown_recursive("t", Some(1234), Some(1234)).unwrap();
    for p in [host.clone(), host.join("file")] {
        let after = std::fs::metadata(&p).unwrap();
        assert_eq!(
            (after.uid(), after.gid()),
            (before.uid(), before.gid()),
            "{p:?}"
        );
    }

    let mut watch = fs.watch(["dlink"], true).unwrap();
    let first = next(&mut watch);
    assert_eq!(first.kind, EventKind::Error, "{first:?}");
    assert_eq!(first.code.as_deref(), Some("ENOENT"));
    std::fs::write(host.join("new"), "y").unwrap();
    std::fs::remove_file(host.join("file")).unwrap();
    assert_eq!(
        watch.recv_timeout(Duration::from_millis(500)).unwrap(),
        None,
        "nothing of the host is reported"
    );
}

/// The next event, failing the test after [`ARRIVE`].
fn next(watch: &mut FsWatch) -> WatchEvent {
    watch
        .recv_timeout(ARRIVE)
        .expect("watch open")
        .expect("an event in time")
}

/// Events until one matches `done` (which is included), at most [`ARRIVE`].
fn until(watch: &mut FsWatch, done: impl FnMut(&WatchEvent) -> bool) -> Vec<WatchEvent> {
    until_within(watch, ARRIVE, done)
}

/// Events until one matches `done` (which is included), at most `bound`.
fn until_within(
    watch: &mut FsWatch,
    bound: Duration,
    mut done: impl FnMut(&WatchEvent) -> bool,
) -> Vec<WatchEvent> {
    let deadline = Instant::now() + bound;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match watch.recv_timeout(left).expect("watch open") {
            Some(e) => {
                let stop = done(&e);
                seen.push(e);
                if stop {
                    return seen;
                }
            }
            None => panic!("timed out; saw {seen:#?}"),
        }
    }
}

#[test]
fn watch_sees_create_write_rename_remove_in_order() {
    let local = Local::start();
    let (sprite, fs, dir) = scratch(&local, "watch");
    let mut watch = fs.watch(["."], false).unwrap();
    assert_eq!(watch.paths(), [PathBuf::from(&dir)]);
    sh(&sprite, "echo hello > a; mv a b; chmod 600 b; rm b", &dir);
    let (a, b) = (Path::new(&dir).join("a"), Path::new(&dir).join("b"));
    let seen = until(&mut watch, |e| e.kind == EventKind::Remove && e.path == b);
    let kinds: Vec<(EventKind, &Path)> = seen.iter().map(|e| (e.kind, e.path.as_path())).collect();
    assert_eq!(
        kinds,
        [
            (EventKind::Create, a.as_path()),
            (EventKind::Modify(ModifyKind::Data), a.as_path()),
            (EventKind::Rename(RenameMode::From), a.as_path()),
            (EventKind::Rename(RenameMode::To), b.as_path()),
            (EventKind::Modify(ModifyKind::Metadata), b.as_path()),
            (EventKind::Remove, b.as_path()),
        ],
        "{seen:#?}"
    );
    // Read when the server handled the event: 6, or none when `a` was already renamed.
    assert!(
        matches!(seen[1].size, Some(6) | None),
        "size when written: {:?}",
        seen[1].size
    );
    assert_eq!(seen[3].from.as_deref(), Some(a.as_path()));
    assert!(
        seen.iter().all(|e| !e.is_dir && e.timestamp.ends_with('Z')),
        "{seen:#?}"
    );
    drop(watch);

    // A watched file on its own, and a path that does not exist.
    sh(&sprite, "echo 1 > solo", &dir);
    let mut watch = fs.watch(["solo", "nowhere"], false).unwrap();
    let e = next(&mut watch);
    assert_eq!(
        (e.kind, e.code.as_deref()),
        (EventKind::Error, Some("ENOENT")),
        "{e:?}"
    );
    assert_eq!(e.path, Path::new(&dir).join("nowhere"));
    sh(&sprite, "echo 22 >> solo", &dir);
    let e = next(&mut watch);
    assert_eq!(e.kind, EventKind::Modify(ModifyKind::Data));
    assert_eq!(
        (e.path.clone(), e.size),
        (Path::new(&dir).join("solo"), Some(5))
    );
}

#[test]
fn a_recursive_watch_follows_new_directories() {
    let local = Local::start();
    let (sprite, fs, dir) = scratch(&local, "rwatch");
    sh(&sprite, "mkdir -p old/deep", &dir);
    let mut watch = fs.watch([dir.as_str()], true).unwrap();
    sh(
        &sprite,
        "echo x > old/deep/f1; mkdir -p new/sub && echo y > new/sub/f2",
        &dir,
    );
    let f1 = Path::new(&dir).join("old/deep/f1");
    let f2 = Path::new(&dir).join("new/sub/f2");
    let seen = until(&mut watch, |e| e.path == f2 && e.kind == EventKind::Create);
    assert!(
        seen.iter()
            .any(|e| e.path == f1 && e.kind == EventKind::Create),
        "{seen:#?}"
    );
    let new = Path::new(&dir).join("new");
    assert!(
        seen.iter()
            .any(|e| e.path == new && e.kind == EventKind::Create && e.is_dir),
        "{seen:#?}"
    );
    // A renamed directory is still watched, under its new name.
    sh(&sprite, "mv new renamed && echo z > renamed/sub/f3", &dir);
    let f3 = Path::new(&dir).join("renamed/sub/f3");
    until(&mut watch, |e| e.path == f3 && e.kind == EventKind::Create);
}

#[test]
fn an_event_storm_overflows_instead_of_queueing() {
    let local = Local::start();
    let (sprite, fs, dir) = scratch(&local, "storm");
    sh(&sprite, "mkdir storm", &dir);
    let mut watch = fs.watch(["storm"], false).unwrap();
    // 100 000 writes, alternating between two files so the kernel cannot merge them into
    // fewer events, while nobody takes the events. About 40 000 fit in the buffers on the way.
    let script = "import os\n\
                  a = os.open('a', os.O_WRONLY | os.O_CREAT)\n\
                  b = os.open('b', os.O_WRONLY | os.O_CREAT)\n\
                  for _ in range(50000):\n    os.write(a, b'x'); os.write(b, b'x')\n";
    let out = sprite
        .command("python3")
        .args(["-c", script])
        .current_dir(format!("{dir}/storm"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Tens of thousands of events pass before the overflow and after it: on a loaded
    // machine that takes a while in a debug build.
    const DRAIN: Duration = Duration::from_secs(90);
    let deadline = Instant::now() + DRAIN;
    let mut events = 0u64;
    let overflow = loop {
        assert!(
            Instant::now() < deadline,
            "no overflow after {events} events"
        );
        let e = next(&mut watch);
        if e.kind == EventKind::Overflow {
            break e;
        }
        events += 1;
    };
    assert!(events < 100_000, "{events} events before the overflow");
    assert!(overflow.message.is_some());
    println!("{events} events before the overflow");
    // (The server's memory through such a storm is measured in sprites-local's own
    // tests/fs_watch.rs, with the server in a process of its own.)
    // The watch goes on after an overflow.
    sh(&sprite, "touch storm/after", &dir);
    let after = Path::new(&dir).join("storm/after");
    until_within(&mut watch, DRAIN, |e| e.path == after);
}

#[test]
fn dropping_a_watch_ends_it_and_its_slot_is_reused() {
    let local = Local::start();
    let (_sprite, fs, _dir) = scratch(&local, "slots");
    // The server allows 8 watches per sprite; 20 in a row work only if each drop frees one.
    for _ in 0..20 {
        let watch = fs.watch(["."], true).unwrap();
        drop(watch);
    }
    let watches: Vec<FsWatch> = (0..8).map(|_| fs.watch(["."], false).unwrap()).collect();
    let err = fs.watch(["."], false).unwrap_err();
    let api = sprites::Error::from_io(&err)
        .and_then(|e| e.api())
        .expect("an API error");
    assert_eq!(api.status, 429, "{api:?}");
    drop(watches);
}

#[test]
fn a_watch_ends_with_an_error_when_its_sandboxed_sprite_goes() {
    if !sandbox() {
        eprintln!("SKIPPED: a host runtime watch is on host paths, which outlive the sprite");
        return;
    }
    let local = Local::start();
    let (sprite, fs, _dir) = scratch(&local, "gone");
    let mut watch = fs.watch(["."], true).unwrap();
    sprite.delete().unwrap();
    // The watcher lived inside the sprite and ended with it: the server closes with 1011.
    let deadline = Instant::now() + ARRIVE;
    let err = loop {
        assert!(Instant::now() < deadline, "the watch outlived its sprite");
        match watch.recv_timeout(ARRIVE) {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the watch outlived its sprite"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(
            err,
            sprites::Error::ConnectionClosed {
                code: Some(1011),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(watch.next().is_none(), "ended");
}
