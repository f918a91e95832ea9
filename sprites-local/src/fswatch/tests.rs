use super::*;
use std::io::{BufRead, BufReader};
use std::time::Duration;

struct Dir(std::path::PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp() -> (Dir, String) {
    let d = std::env::temp_dir().join(format!(
        "sprites-fswatch-{}-{}",
        std::process::id(),
        crate::random::hex(4).unwrap()
    ));
    std::fs::create_dir_all(&d).unwrap();
    let s = d.to_str().unwrap().to_owned();
    (Dir(d), s)
}

/// Starts a watcher thread; returns the reader of its lines.
fn watch(
    paths: Vec<String>,
    recursive: bool,
    max: usize,
) -> BufReader<std::os::unix::net::UnixStream> {
    let (ours, theirs) = sys::socket::stream_pair().unwrap();
    let spec = WatchSpec {
        paths,
        recursive,
        max_watches: max,
    };
    std::thread::spawn(move || run(&spec, theirs));
    let s = std::os::unix::net::UnixStream::from(ours);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    BufReader::new(s)
}

fn next(r: &mut BufReader<std::os::unix::net::UnixStream>) -> Message {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(check_line(line.trim_end().as_bytes()), "{line}");
    serde_json::from_str(&line).unwrap()
}

fn ev(m: &Message) -> (String, String) {
    match m {
        Message::Event { path, event, .. } => (event.clone(), path.clone()),
        other => panic!("not an event: {other:?}"),
    }
}

#[test]
fn create_write_rename_remove_in_order() {
    let (_d, dir) = temp();
    let mut r = watch(vec![dir.clone(), format!("{dir}/missing")], false, 16);
    assert!(matches!(next(&mut r), Message::Subscribed { paths } if paths.len() == 2));
    assert!(matches!(next(&mut r), Message::Error { code: Some(c), .. } if c == "ENOENT"));
    let (a, b) = (format!("{dir}/a"), format!("{dir}/b"));
    std::fs::write(&a, b"hi").unwrap();
    std::fs::rename(&a, &b).unwrap();
    std::fs::remove_file(&b).unwrap();
    assert_eq!(ev(&next(&mut r)), ("create".into(), a.clone()));
    assert_eq!(ev(&next(&mut r)), ("write".into(), a.clone()));
    assert_eq!(ev(&next(&mut r)), ("rename".into(), a.clone()));
    match next(&mut r) {
        Message::Event {
            event,
            path,
            renamed_from,
            ..
        } => {
            assert_eq!((event.as_str(), path.as_str()), ("create", b.as_str()));
            assert_eq!(renamed_from.as_deref(), Some(a.as_str()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ev(&next(&mut r)), ("remove".into(), b));
}

#[test]
fn recursive_follows_new_directories_and_the_limit_is_told() {
    let (_d, dir) = temp();
    let mut r = watch(vec![dir.clone()], true, 3);
    assert!(matches!(next(&mut r), Message::Subscribed { .. }));
    std::fs::create_dir_all(format!("{dir}/x/y")).unwrap();
    std::fs::write(format!("{dir}/x/y/f"), b"1").unwrap();
    let mut seen = Vec::new();
    while !seen.contains(&("create".to_owned(), format!("{dir}/x/y/f"))) {
        seen.push(ev(&next(&mut r)));
    }
    assert_eq!(seen[0], ("create".into(), format!("{dir}/x")));
    // 3 watches: dir, x, y. One more directory is past the limit.
    std::fs::create_dir(format!("{dir}/x/y/z")).unwrap();
    loop {
        match next(&mut r) {
            Message::Error { code: Some(c), .. } => {
                assert_eq!(c, "watch_limit");
                break;
            }
            Message::Event { .. } => {}
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_watcher_ends_when_its_reader_goes() {
    let (_d, dir) = temp();
    let (ours, theirs) = sys::socket::stream_pair().unwrap();
    let spec = WatchSpec {
        paths: vec![dir],
        recursive: false,
        max_watches: 4,
    };
    let t = std::thread::spawn(move || run(&spec, theirs));
    drop(ours);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !t.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "watcher still running"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_directory_moved_out_of_the_tree_is_no_longer_reported() {
    let (_d, base) = temp();
    let dir = format!("{base}/in");
    let outside = format!("{base}/out");
    std::fs::create_dir_all(format!("{dir}/sub")).unwrap();
    let mut r = watch(vec![dir.clone()], true, 16);
    assert!(matches!(next(&mut r), Message::Subscribed { .. }));
    std::fs::rename(format!("{dir}/sub"), &outside).unwrap();
    assert_eq!(ev(&next(&mut r)), ("rename".into(), format!("{dir}/sub")));
    // Changes in the moved directory are not ours any more; the next event is this one.
    std::fs::write(format!("{outside}/x"), b"1").unwrap();
    std::fs::write(format!("{dir}/marker"), b"").unwrap();
    assert_eq!(
        ev(&next(&mut r)),
        ("create".into(), format!("{dir}/marker"))
    );
}

#[test]
fn a_watched_file_reports_itself() {
    let (_d, dir) = temp();
    let f = format!("{dir}/f");
    std::fs::write(&f, b"1").unwrap();
    let mut r = watch(vec![f.clone()], true, 4);
    assert!(matches!(next(&mut r), Message::Subscribed { .. }));
    std::fs::write(&f, b"123").unwrap();
    // The truncation is a write too; its size may be read before or after the data.
    loop {
        match next(&mut r) {
            Message::Event {
                event, path, size, ..
            } => {
                assert_eq!((event.as_str(), path.as_str()), ("write", f.as_str()));
                if size == Some(3) {
                    break;
                }
                assert_eq!(size, Some(0));
            }
            other => panic!("{other:?}"),
        }
    }
    std::fs::remove_file(&f).unwrap();
    // Removing a file is an attribute change (its link count) and then its removal.
    let mut seen = vec![ev(&next(&mut r))];
    while seen.last().unwrap().0 != "remove" {
        seen.push(ev(&next(&mut r)));
    }
    assert!(seen.iter().all(|(_, p)| *p == f), "{seen:?}");
}
