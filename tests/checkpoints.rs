//! End to end: checkpoints and restore (PROTOCOL.md §12) against a real `sprites-local`, with
//! the real client. Runs on the host runtime by default and on the sandbox runtime with
//! `SPRITES_TEST_RUNTIME=sandbox` (where checkpoints are btrfs snapshots).

// sprites-local, which these tests drive, runs on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::{Local, test_runtime};
use sprites::{CheckpointListOptions, Error, Sprite};
use std::io::{BufRead, BufReader};

fn sh(sprite: &Sprite, script: &str) -> String {
    let out = sprite.command("sh").args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Everything about the tree `work` in the home directory a restore must bring back: every
/// entry's path, type, mode and symlink target, and every file's checksum.
fn manifest(sprite: &Sprite) -> String {
    sh(
        sprite,
        "cd && find work -printf '%p %y %m %l\\n' | LC_ALL=C sort && \
         find work -type f -exec sha256sum {} + | LC_ALL=C sort",
    )
}

fn api_status(e: Error) -> u16 {
    match e {
        Error::Api(api) => api.status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn restore_brings_back_contents_modes_symlinks_and_empty_dirs_and_ends_processes() {
    let local = Local::start();
    let sprite = local.sprite("cp-tree");
    sh(
        &sprite,
        "cd && mkdir -p work/a/b work/empty work/gone && cd work && \
         printf 'one\\n' > a/one && printf 'keep' > a/b/keep && head -c 100000 /dev/urandom > rand && \
         chmod 600 a/one && chmod 751 a/b && printf '#!/bin/sh\\n' > run.sh && chmod 755 run.sh && \
         ln -s a/one link && ln -s missing dangling && echo x > gone/file",
    );
    let before = manifest(&sprite);
    let mut events = Vec::new();
    let mut stream = sprite.create_checkpoint_with_comment("before").unwrap();
    for ev in stream.by_ref() {
        events.push(ev.unwrap());
    }
    let id = stream.checkpoint_id().unwrap().to_owned();
    assert!(
        events.iter().any(|e| e.data == format!("  ID: {id}")),
        "{events:?}"
    );
    let last = events.last().unwrap();
    assert_eq!(last.progress, Some(1.0));

    // Change, add and delete files; change modes and symlinks; remove an empty dir.
    sh(
        &sprite,
        "cd work && printf 'changed' > a/one && echo new > a/new && rm a/b/keep && \
         head -c 100000 /dev/urandom > rand && chmod 644 run.sh && chmod 700 a && \
         rm link && ln -s a/new link && rm -r gone && rmdir empty && mkdir extra",
    );
    assert_ne!(manifest(&sprite), before);
    // Running before the restore begins: `spawn` may return before the server has started
    // the process (over a control connection the request is not waited for), so the test
    // waits for its first line.
    let mut sleeper = sprite
        .command("sh")
        .args(["-c", "echo up; exec sleep 301.234"])
        .stdin(sprites::Stdio::null())
        .stdout(sprites::Stdio::piped())
        .spawn()
        .unwrap();
    let mut up = [0u8; 3];
    std::io::Read::read_exact(sleeper.stdout.as_mut().unwrap(), &mut up).unwrap();
    assert_eq!(&up, b"up\n");

    let restored = sprite.restore_checkpoint(&id).unwrap().wait().unwrap();
    assert_eq!(restored, id);
    assert_eq!(manifest(&sprite), before);
    // The process that ran before the restore is gone.
    let status = sleeper.wait();
    assert!(
        status.as_ref().map_or(true, |s| !s.success()),
        "the sleeper survived the restore: {status:?}"
    );
    assert!(
        !sh(&sprite, "ps -eo args").contains("sleep 301.234"),
        "the sleeper still runs"
    );

    // The filesystem API sees the restored tree too.
    let home = sh(&sprite, "printf %s \"$HOME\"");
    let fs = sprite.fs_at(format!("{home}/work"));
    assert_eq!(fs.read("a/one").unwrap(), b"one\n");
    assert!(fs.metadata("a/new").is_err());
    assert_eq!(fs.read("a/b/keep").unwrap(), b"keep");
    let mut names: Vec<String> = fs
        .read_dir(".")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["a", "dangling", "empty", "gone", "link", "rand", "run.sh"]
    );
}

#[test]
fn listing_ids_comments_lineage_and_the_current_entry() {
    let local = Local::start();
    let sprite = local.sprite("cp-list");
    let list = sprite
        .list_checkpoints(&CheckpointListOptions::new())
        .unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0].is_current() && list[0].source_id.is_none());

    let v0 = sprite.create_checkpoint().unwrap().wait().unwrap();
    let v1 = sprite
        .create_checkpoint_with_comment("second")
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!((v0.as_str(), v1.as_str()), ("v0", "v1"));
    sprite.restore_checkpoint("v0").unwrap().wait().unwrap();
    let v2 = sprite.create_checkpoint().unwrap().wait().unwrap();
    assert_eq!(v2, "v2");

    let list = sprite
        .list_checkpoints(&CheckpointListOptions::new().include_auto(true))
        .unwrap();
    let ids: Vec<&str> = list.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["Current", "v2", "v1", "v0"]);
    assert_eq!(list[0].source_id.as_deref(), Some("v2"));
    assert_eq!(list[0].history, ["v2", "v0"]);
    // v2 was taken on top of the restored v0, not of v1.
    let cp2 = sprite.get_checkpoint("v2").unwrap();
    assert_eq!(cp2.source_id.as_deref(), Some("v0"));
    assert_eq!(cp2.history, ["v0"]);
    let cp1 = sprite.get_checkpoint("v1").unwrap();
    assert_eq!(cp1.comment, "second");
    assert!(cp1.is_healthy() && !cp1.is_auto && !cp1.create_time.is_empty());

    let lineage = sprite
        .list_checkpoints(&CheckpointListOptions::new().history("v2"))
        .unwrap();
    let ids: Vec<&str> = lineage.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["v2", "v0"]);

    // Delete: not the one the sprite is on; then another one goes, and its id is not reused.
    assert_eq!(api_status(sprite.delete_checkpoint("v2").unwrap_err()), 409);
    sprite.delete_checkpoint("v1").unwrap();
    assert_eq!(api_status(sprite.get_checkpoint("v1").unwrap_err()), 404);
    assert_eq!(sprite.create_checkpoint().unwrap().wait().unwrap(), "v3");
}

#[test]
fn unknown_checkpoints_are_404_and_current_cannot_be_restored() {
    let local = Local::start();
    let sprite = local.sprite("cp-404");
    assert_eq!(api_status(sprite.get_checkpoint("v0").unwrap_err()), 404);
    assert_eq!(
        api_status(sprite.restore_checkpoint("v0").unwrap_err()),
        404
    );
    assert_eq!(
        api_status(sprite.restore_checkpoint("Current").unwrap_err()),
        400
    );
    assert_eq!(
        api_status(
            sprite
                .list_checkpoints(&CheckpointListOptions::new().history("v5"))
                .unwrap_err()
        ),
        404
    );
    let ghost = local.client.sprite("no-such-sprite");
    assert_eq!(api_status(ghost.create_checkpoint().unwrap_err()), 404);
    assert_eq!(
        api_status(
            ghost
                .list_checkpoints(&CheckpointListOptions::new())
                .unwrap_err()
        ),
        404
    );
    // `Current` is gettable, and is the live state.
    assert!(sprite.get_checkpoint("Current").unwrap().is_current());
    // Comments: 4096 bytes are taken, 4097 refused before anything is done.
    let longest = "c".repeat(4096);
    let id = sprite
        .create_checkpoint_with_comment(&longest)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(sprite.get_checkpoint(&id).unwrap().comment, longest);
    let too_long = "c".repeat(4097);
    assert_eq!(
        api_status(
            sprite
                .create_checkpoint_with_comment(&too_long)
                .unwrap_err()
        ),
        400
    );
}

#[test]
fn a_sprite_keeps_at_most_100_checkpoints() {
    let local = Local::start();
    let sprite = local.sprite("cp-limit");
    for i in 0..100 {
        let id = sprite.create_checkpoint().unwrap().wait().unwrap();
        assert_eq!(id, format!("v{i}"));
    }
    assert_eq!(api_status(sprite.create_checkpoint().unwrap_err()), 409);
    // Deleting one makes room again; ids go on from where they were.
    sprite.delete_checkpoint("v0").unwrap();
    assert_eq!(sprite.create_checkpoint().unwrap().wait().unwrap(), "v100");
    let listed = sprite
        .list_checkpoints(&CheckpointListOptions::new())
        .unwrap();
    assert_eq!(listed.len(), 101, "100 checkpoints and Current");
}

/// The writer's 256 MiB, regenerated for comparison: 256 chunks of 1 MiB of `yes` output.
const CHUNKS: &str = "for i in $(seq 256); do yes abcdefgh | head -c 1048576; done";

#[test]
fn a_checkpoint_taken_during_a_256_mib_write_is_consistent() {
    let local = Local::start();
    let sprite = local.sprite("cp-torn");
    // Written whole to a temp name, then renamed into place: any checkpoint must show `big`
    // either absent or complete.
    let writer = "cd && { yes abcdefgh | head -c 1048576; echo started >&2; \
         for i in $(seq 255); do yes abcdefgh | head -c 1048576; sleep 0.005; done; } > big.tmp && \
         mv big.tmp big && echo done >&2";
    let mut child = sprite
        .command("sh")
        .args(["-c", writer])
        .stderr(sprites::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    let during = sprite.create_checkpoint().unwrap().wait().unwrap();
    assert_eq!(lines.next().unwrap().unwrap(), "done");
    assert!(child.wait().unwrap().success());
    let after = sprite.create_checkpoint().unwrap().wait().unwrap();
    let check = format!(
        "cd && if [ -e big ]; then {CHUNKS} | cmp - big && echo complete; else echo absent; fi"
    );

    sprite.restore_checkpoint(&during).unwrap().wait().unwrap();
    let seen = sh(&sprite, &check);
    // The write was still going on: the snapshot predates the rename.
    assert_eq!(seen.trim(), "absent", "{seen}");
    sprite.restore_checkpoint(&after).unwrap().wait().unwrap();
    assert_eq!(sh(&sprite, &check).trim(), "complete");
}

#[test]
fn the_newest_five_are_visible_read_only_inside_a_sandboxed_sprite() {
    if test_runtime() != sprites_local::Runtime::Sandbox {
        eprintln!("SKIPPED: /.sprite/checkpoints exists in sandboxed sprites only");
        return;
    }
    let local = Local::start();
    let sprite = local.sprite("cp-visible");
    for i in 0..7 {
        sh(&sprite, &format!("echo {i} > ~/n"));
        sprite.create_checkpoint().unwrap().wait().unwrap();
    }
    let listed = sh(&sprite, "ls /.sprite/checkpoints | sort -V | tr '\\n' ' '");
    assert_eq!(listed.trim(), "v2 v3 v4 v5 v6");
    assert_eq!(
        sh(&sprite, "cat /.sprite/checkpoints/v4/home/sprite/n").trim(),
        "4"
    );
    let out = sprite
        .command("sh")
        .args(["-c", "sudo touch /.sprite/checkpoints/v4/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Hidden ones can still be restored.
    sprite.restore_checkpoint("v0").unwrap().wait().unwrap();
    assert_eq!(sh(&sprite, "cat ~/n").trim(), "0");
}

#[test]
fn services_come_back_after_a_restore_on_the_restored_files() {
    let local = Local::start();
    let sprite = local.sprite("cp-svc");
    sh(&sprite, "cd && echo old > svc-data");
    let spec =
        sprites::ServiceSpec::new("sh").args(["-c", "cat ~/svc-data > ~/svc-saw; exec sleep 600"]);
    sprite
        .create_service("keeper", &spec, None)
        .unwrap()
        .wait()
        .unwrap();
    let before = sprite.get_service("keeper").unwrap().state.unwrap();
    assert_eq!(before.status, sprites::ServiceStatus::Running);
    let id = sprite.create_checkpoint().unwrap().wait().unwrap();
    sh(&sprite, "cd && echo new > svc-data");

    sprite.restore_checkpoint(&id).unwrap().wait().unwrap();
    let after = sprite.get_service("keeper").unwrap().state.unwrap();
    assert_eq!(after.status, sprites::ServiceStatus::Running);
    assert_ne!(after.pid, before.pid, "the service was not restarted");
    // The restarted service ran on the restored files (a bounded wait for its first line).
    let saw = sh(
        &sprite,
        "for i in $(seq 100); do [ -s ~/svc-saw ] && break; sleep 0.05; done; cat ~/svc-saw",
    );
    assert_eq!(saw.trim(), "old");
}
