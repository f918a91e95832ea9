//! HostFs against real temp directories.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use super::*;
use crate::fsops::{copy, write_atomic, EntryKind, WriteError};

/// A temp directory removed on drop (made writable first, so tests may chmod inside it).
struct Tmp(String);

impl Tmp {
    fn new() -> Tmp {
        let dir = std::env::temp_dir().join(format!(
            "sprites-local-fsops-{}-{}",
            std::process::id(),
            crate::random::hex(6).unwrap()
        ));
        fs::create_dir_all(&dir).unwrap();
        Tmp(dir.to_str().unwrap().to_owned())
    }

    fn p(&self, rel: &str) -> String {
        format!("{}/{rel}", self.0)
    }

    fn names(&self, rel: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.p(rel))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chmod")
            .args(["-R", "u+rwx", &self.0])
            .status();
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn spec(path: &str, mode: u32, mkdir_parents: bool) -> WriteSpec {
    WriteSpec {
        path: path.to_owned(),
        mode,
        mkdir_parents,
        durable: false,
    }
}

fn write(path: &str, data: &[u8]) -> Result<Written, WriteError> {
    write_atomic(&HostFs, &spec(path, 0o644, true), &mut &data[..])
}

fn errno<T: std::fmt::Debug>(r: Result<T, FsError>) -> (i32, String) {
    let e = r.unwrap_err();
    (e.errno, e.path)
}

/// A body that yields some bytes, then fails (a cut connection).
struct Torn(usize);

impl Read for Torn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0 == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "cut"));
        }
        let n = self.0.min(buf.len());
        buf[..n].fill(b'N');
        self.0 -= n;
        Ok(n)
    }
}

#[test]
fn writes_create_replace_and_set_the_exact_mode() {
    let t = Tmp::new();
    let w = write(&t.p("a/b/f.txt"), b"hello").unwrap();
    assert_eq!((w.size, w.mode.as_str()), (5, "0644"));
    assert_eq!(fs::read(t.p("a/b/f.txt")).unwrap(), b"hello");
    // Mode is applied as given, not through the umask, and replaces the old file's.
    let w = write_atomic(
        &HostFs,
        &spec(&t.p("a/b/f.txt"), 0o6771, false),
        &mut &b"x"[..],
    )
    .unwrap();
    assert_eq!(w.mode, "6771");
    let meta = fs::metadata(t.p("a/b/f.txt")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o6771);
    assert_eq!(fs::read(t.p("a/b/f.txt")).unwrap(), b"x");
    assert_eq!(t.names("a/b"), ["f.txt"], "no temp file left");
    // An empty body makes an empty file.
    assert_eq!(write(&t.p("empty"), b"").unwrap().size, 0);
    assert_eq!(fs::metadata(t.p("empty")).unwrap().len(), 0);
}

#[test]
fn write_refusals_leave_everything_as_it_was() {
    let t = Tmp::new();
    let missing = t.p("no/such/f");
    let r = write_atomic(&HostFs, &spec(&missing, 0o644, false), &mut &b"x"[..]);
    match r {
        Err(WriteError::Fs(e)) => assert_eq!((e.errno, e.path), (libc::ENOENT, missing)),
        other => panic!("{other:?}"),
    }
    fs::create_dir(t.p("d")).unwrap();
    match write(&t.p("d"), b"x") {
        Err(WriteError::Fs(e)) => assert_eq!(e.errno, libc::EISDIR),
        other => panic!("{other:?}"),
    }
    fs::write(t.p("file"), "f").unwrap();
    match write(&t.p("file/sub/x"), b"x") {
        Err(WriteError::Fs(e)) => assert_eq!(e.errno, libc::ENOTDIR),
        other => panic!("{other:?}"),
    }
    assert!(matches!(write("/", b"x"), Err(WriteError::Fs(e)) if e.errno == libc::EISDIR));
    assert_eq!(t.names(""), ["d", "file"]);
}

#[test]
fn a_torn_body_commits_nothing_and_removes_its_temp_file() {
    let t = Tmp::new();
    fs::write(t.p("keep"), "old contents").unwrap();
    let r = write_atomic(
        &HostFs,
        &spec(&t.p("keep"), 0o600, true),
        &mut Torn(700_000),
    );
    assert!(matches!(r, Err(WriteError::Body(_))), "{r:?}");
    assert_eq!(fs::read_to_string(t.p("keep")).unwrap(), "old contents");
    assert_eq!(t.names(""), ["keep"]);
}

#[test]
fn writing_through_a_symlink_replaces_its_target_and_keeps_the_link() {
    let t = Tmp::new();
    fs::write(t.p("target"), "old").unwrap();
    symlink("target", t.p("link")).unwrap();
    write(&t.p("link"), b"new").unwrap();
    assert!(fs::symlink_metadata(t.p("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read_to_string(t.p("target")).unwrap(), "new");
    symlink("loop-b", t.p("loop-a")).unwrap();
    symlink("loop-a", t.p("loop-b")).unwrap();
    assert!(
        matches!(write(&t.p("loop-a"), b"x"), Err(WriteError::Fs(e)) if e.errno == libc::ELOOP)
    );
}

#[test]
fn open_read_accepts_only_regular_files_and_never_blocks() {
    let t = Tmp::new();
    fs::write(t.p("f"), "12345").unwrap();
    assert_eq!(HostFs.open_read(&t.p("f")).unwrap().len, 5);
    assert_eq!(
        errno(HostFs.open_read(&t.p("nope"))),
        (libc::ENOENT, t.p("nope"))
    );
    assert_eq!(errno(HostFs.open_read(&t.p(""))).0, libc::EISDIR);
    crate::sys::file::mkfifo(t.p("fifo").as_ref(), 0o600).unwrap();
    let started = Instant::now();
    assert_eq!(errno(HostFs.open_read(&t.p("fifo"))).0, libc::EINVAL);
    assert!(started.elapsed() < Duration::from_secs(2));
    symlink("l2", t.p("l1")).unwrap();
    symlink("l1", t.p("l2")).unwrap();
    assert_eq!(errno(HostFs.open_read(&t.p("l1"))).0, libc::ELOOP);
}

#[test]
fn listing_directories_files_and_symlinks() {
    let t = Tmp::new();
    fs::write(t.p("b.txt"), "22").unwrap();
    fs::create_dir(t.p("a")).unwrap();
    fs::write(t.p("a/inner"), "x").unwrap();
    symlink("b.txt", t.p("c-link")).unwrap();
    fs::set_permissions(t.p("b.txt"), fs::Permissions::from_mode(0o640)).unwrap();

    let l = HostFs.list(&t.0, false).unwrap();
    assert_eq!(l.count, 3);
    let got: Vec<(&str, EntryKind, bool)> = l
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.kind, e.is_dir))
        .collect();
    assert_eq!(
        got,
        [
            ("a", EntryKind::Directory, true),
            ("b.txt", EntryKind::File, false),
            ("c-link", EntryKind::Symlink, false)
        ]
    );
    let b = &l.entries[1];
    assert_eq!((b.path.clone(), b.size), (t.p("b.txt"), 2));
    assert_eq!(b.mode, "0640");
    assert!(b.mod_time.ends_with('Z') && b.mod_time.len() >= 20);

    // A file, or a symlink to one: exactly one entry, for the path given, target's stat.
    let one = HostFs.list(&t.p("c-link"), false).unwrap();
    assert_eq!(one.count, 1);
    let e = &one.entries[0];
    assert_eq!(
        (e.name.as_str(), e.path.clone(), e.kind, e.size),
        ("c-link", t.p("c-link"), EntryKind::File, 2)
    );

    let rec = HostFs.list(&t.0, true).unwrap();
    let names: Vec<&str> = rec.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["a", "inner", "b.txt", "c-link"], "pre-order");
    assert_eq!(rec.entries[1].path, t.p("a/inner"));

    assert_eq!(errno(HostFs.list(&t.p("nope"), false)).0, libc::ENOENT);
    symlink("m2", t.p("m1")).unwrap();
    symlink("m1", t.p("m2")).unwrap();
    assert_eq!(errno(HostFs.list(&t.p("m1"), false)).0, libc::ELOOP);
}

#[test]
fn deleting() {
    let t = Tmp::new();
    fs::create_dir_all(t.p("d/e")).unwrap();
    fs::write(t.p("d/e/f"), "x").unwrap();
    fs::create_dir(t.p("empty")).unwrap();
    fs::write(t.p("file"), "x").unwrap();
    symlink(t.p("d"), t.p("dlink")).unwrap();

    assert_eq!(errno(HostFs.delete(&t.p("d"), false)).0, libc::ENOTEMPTY);
    assert_eq!(errno(HostFs.delete("/", true)), (libc::EINVAL, "/".into()));
    assert_eq!(errno(HostFs.delete(&t.p("nope"), true)).0, libc::ENOENT);
    // A symlink to a directory goes, its target stays (even with recursive).
    HostFs.delete(&t.p("dlink"), true).unwrap();
    assert!(fs::metadata(t.p("d/e/f")).is_ok());
    let d = HostFs.delete(&t.p("empty"), false).unwrap();
    assert_eq!((d.deleted, d.count), (vec![t.p("empty")], 1));
    HostFs.delete(&t.p("file"), false).unwrap();
    HostFs.delete(&t.p("d"), true).unwrap();
    assert!(t.names("").is_empty());
}

#[test]
fn renaming() {
    let t = Tmp::new();
    fs::write(t.p("a"), "A").unwrap();
    fs::write(t.p("b"), "B").unwrap();
    let r = HostFs.rename(&t.p("a"), &t.p("b")).unwrap();
    assert_eq!((r.source, r.dest), (t.p("a"), t.p("b")));
    assert_eq!(fs::read_to_string(t.p("b")).unwrap(), "A");
    assert_eq!(
        errno(HostFs.rename(&t.p("ghost"), &t.p("x"))),
        (libc::ENOENT, t.p("ghost"))
    );
    assert_eq!(
        errno(HostFs.rename(&t.p("b"), &t.p("no/x"))),
        (libc::ENOENT, t.p("no/x"))
    );
    fs::create_dir_all(t.p("full/x")).unwrap();
    fs::create_dir(t.p("dir")).unwrap();
    assert_eq!(
        errno(HostFs.rename(&t.p("dir"), &t.p("full"))),
        (libc::ENOTEMPTY, t.p("full"))
    );
}

#[test]
fn copying_files_and_trees() {
    let t = Tmp::new();
    fs::create_dir_all(t.p("src/sub")).unwrap();
    fs::write(t.p("src/a"), "aaa").unwrap();
    fs::write(t.p("src/sub/b"), "bb").unwrap();
    symlink("a", t.p("src/link")).unwrap();
    fs::set_permissions(t.p("src/a"), fs::Permissions::from_mode(0o751)).unwrap();
    fs::set_permissions(t.p("src/sub"), fs::Permissions::from_mode(0o555)).unwrap();
    // An old mtime, to see whether it is kept.
    let old = std::process::Command::new("touch")
        .args(["-d", "2001-02-03 04:05:06", &t.p("src/sub/b")])
        .status()
        .unwrap();
    assert!(old.success());

    let c = copy::copy(&t.p("src/a"), &t.p("a2"), false, false).unwrap();
    assert_eq!((c.count, c.total_bytes), (1, 3));
    assert_eq!(fs::read_to_string(t.p("a2")).unwrap(), "aaa");
    assert_eq!(fs::metadata(t.p("a2")).unwrap().mode() & 0o7777, 0o751);
    assert_eq!(
        errno(copy::copy(&t.p("src"), &t.p("dst"), false, false)).0,
        libc::EISDIR
    );
    assert_eq!(
        errno(copy::copy(&t.p("src"), &t.p("src/sub/in"), true, false)).0,
        libc::EINVAL,
        "into itself"
    );

    let c = copy::copy(&t.p("src"), &t.p("dst"), true, true).unwrap();
    assert_eq!(c.count, 5, "src, a, link, sub, sub/b: {:?}", c.copied);
    assert_eq!(c.total_bytes, 5);
    assert_eq!(fs::read_to_string(t.p("dst/sub/b")).unwrap(), "bb");
    assert_eq!(fs::read_link(t.p("dst/link")).unwrap().to_str(), Some("a"));
    assert_eq!(fs::metadata(t.p("dst/sub")).unwrap().mode() & 0o7777, 0o555);
    assert_eq!(
        fs::metadata(t.p("dst/sub/b")).unwrap().mtime(),
        fs::metadata(t.p("src/sub/b")).unwrap().mtime()
    );
    assert!(t.names("dst").iter().all(|n| !n.contains("sprites-tmp")));
    assert_eq!(
        errno(copy::copy(&t.p("ghost"), &t.p("x"), true, false)).0,
        libc::ENOENT
    );
}

#[test]
fn chmod_single_and_recursive() {
    let t = Tmp::new();
    fs::create_dir_all(t.p("d/e")).unwrap();
    fs::write(t.p("d/e/f"), "x").unwrap();
    fs::write(t.p("d/g"), "x").unwrap();
    symlink("/etc/hostname", t.p("d/link")).unwrap();

    let c = HostFs.chmod(&t.p("d/g"), 0o600, false).unwrap();
    assert_eq!((c.count, c.mode.as_str()), (1, "0600"));
    assert_eq!(fs::metadata(t.p("d/g")).unwrap().mode() & 0o777, 0o600);

    let c = HostFs.chmod(&t.p("d"), 0o750, true).unwrap();
    assert_eq!(
        c.count, 4,
        "d, e, f, g; the symlink is skipped: {:?}",
        c.affected
    );
    for p in ["d", "d/e", "d/e/f", "d/g"] {
        assert_eq!(fs::metadata(t.p(p)).unwrap().mode() & 0o777, 0o750, "{p}");
    }
    // A mode without search permission is applied bottom-up, so the walk is not locked out.
    let c = HostFs.chmod(&t.p("d"), 0o644, true).unwrap();
    assert_eq!(c.count, 4);
    fs::set_permissions(t.p("d"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(t.p("d/e"), fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(fs::metadata(t.p("d/e/f")).unwrap().mode() & 0o777, 0o644);
    assert_eq!(
        errno(HostFs.chmod(&t.p("nope"), 0o644, false)).0,
        libc::ENOENT
    );
}

#[test]
fn run_dispatches_serialisable_ops() {
    let t = Tmp::new();
    fs::write(t.p("f"), "x").unwrap();
    let op: FsOp = serde_json::from_value(serde_json::json!({
        "op": "list", "path": t.0, "recursive": false
    }))
    .unwrap();
    match HostFs.run(&op).unwrap() {
        FsOutput::Listing(l) => assert_eq!(l.count, 1),
        other => panic!("{other:?}"),
    }
    let op = FsOp::Delete {
        path: t.p("f"),
        recursive: false,
    };
    assert!(matches!(HostFs.run(&op).unwrap(), FsOutput::Deleted(_)));
    assert_eq!(HostFs.run(&op).unwrap_err().errno, libc::ENOENT);
}

#[test]
fn a_recursive_delete_walks_again_when_a_writer_adds_an_entry_but_not_forever() {
    let not_empty = || io::Error::from(io::ErrorKind::DirectoryNotEmpty);
    for (failures, expect_ok) in [(0, true), (3, true), (4, false)] {
        let mut walks = 0;
        let result = super::retry_while_not_empty(|| {
            walks += 1;
            if walks <= failures {
                Err(not_empty())
            } else {
                Ok(())
            }
        });
        assert_eq!(result.is_ok(), expect_ok, "{failures} racing writers");
        assert_eq!(walks, (failures + 1).min(4));
    }
    // Any other error is the answer at once.
    let mut walks = 0;
    let result = super::retry_while_not_empty(|| {
        walks += 1;
        Err(io::Error::from(io::ErrorKind::PermissionDenied))
    });
    assert_eq!(result.unwrap_err().kind(), io::ErrorKind::PermissionDenied);
    assert_eq!(walks, 1);
}
