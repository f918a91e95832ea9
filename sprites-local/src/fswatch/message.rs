//! The watch's messages: the JSON text frames of PROTOCOL.md §9 "Watch", as the watcher
//! writes them (one per line) and as the server checks them before forwarding.

use serde::{Deserialize, Serialize};

use crate::fsops::FsError;

/// Longest line the server forwards: a path is at most `PATH_MAX` (4096) bytes, twice in a
/// rename, plus escaping. Anything longer is not from an honest watcher.
pub const MAX_LINE: usize = 32 * 1024;

/// One message to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Message {
    /// First, once: the paths subscribed to, resolved.
    Subscribed {
        /// As the client asked for them, made absolute.
        paths: Vec<String>,
    },
    /// A change.
    Event {
        /// The absolute path changed (for a rename's `rename`, the old name).
        path: String,
        /// `create`, `write`, `remove`, `rename` or `chmod`.
        event: String,
        /// When the watcher saw it, RFC 3339.
        timestamp: String,
        /// The file's size then, when it still exists and is not a directory.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        size: Option<u64>,
        /// Whether it is a directory.
        #[serde(rename = "isDir")]
        is_dir: bool,
        /// On a `create` that is the new name of a rename seen in the same watch: the old
        /// name (an extension; fsnotify's clients ignore it).
        #[serde(
            rename = "renamedFrom",
            skip_serializing_if = "Option::is_none",
            default
        )]
        renamed_from: Option<String>,
    },
    /// Something the client should know that is not a change: a path that cannot be
    /// watched, the watch limit, or lost events (`code: "overflow"`).
    Error {
        /// Machine-readable: an errno name (`ENOENT`), `watch_limit` or `overflow`.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        code: Option<String>,
        /// The path concerned, if one is.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        path: Option<String>,
        /// What happened.
        message: String,
    },
}

impl Message {
    /// A change to something that still exists: its size is read now.
    pub fn event(path: &str, kind: &str, is_dir: bool) -> Message {
        Message::Event {
            path: path.to_owned(),
            event: kind.to_owned(),
            timestamp: crate::time::now_rfc3339(),
            size: if is_dir { None } else { super::size_of(path) },
            is_dir,
            renamed_from: None,
        }
    }

    /// A change after which `path` no longer exists (a removal, a rename's old name).
    pub fn gone(path: &str, kind: &str, is_dir: bool) -> Message {
        Message::Event {
            path: path.to_owned(),
            event: kind.to_owned(),
            timestamp: crate::time::now_rfc3339(),
            size: None,
            is_dir,
            renamed_from: None,
        }
    }

    /// Events were lost.
    pub fn overflow() -> Message {
        Message::Error {
            code: Some("overflow".into()),
            path: None,
            message: "too many changes at once: the event queue overflowed and some events \
                      were dropped"
                .into(),
        }
    }

    /// A path that could not be watched.
    pub fn fs_error(path: &str, e: &std::io::Error) -> Message {
        let e = FsError::from_io(e, path);
        Message::Error {
            code: Some(e.code().into()),
            path: Some(path.to_owned()),
            message: format!("{}: {path}", e.message),
        }
    }
}

/// Whether `line` (without its newline) is a message the server may forward: at most
/// [`MAX_LINE`] bytes of one JSON [`Message`]. The watcher runs where a sprite's code could
/// tamper with it; this keeps what reaches the client to the protocol's shapes.
pub fn check_line(line: &[u8]) -> bool {
    line.len() <= MAX_LINE && serde_json::from_slice::<Message>(line).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes() {
        let m = Message::Event {
            path: "/a".into(),
            event: "write".into(),
            timestamp: "2026-01-01T00:00:00Z".into(),
            size: Some(3),
            is_dir: false,
            renamed_from: None,
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"type":"event","path":"/a","event":"write",
                   "timestamp":"2026-01-01T00:00:00Z","size":3,"isDir":false})
        );
        assert_eq!(
            serde_json::to_value(Message::overflow()).unwrap()["code"],
            "overflow"
        );
        assert_eq!(
            serde_json::to_value(Message::Subscribed {
                paths: vec!["/x".into()]
            })
            .unwrap(),
            json!({"type":"subscribed","paths":["/x"]})
        );
        let e = Message::fs_error("/m", &std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(
            serde_json::to_value(e).unwrap(),
            json!({"type":"error","code":"ENOENT","path":"/m",
                   "message":"no such file or directory: /m"})
        );
    }

    #[test]
    fn lines_are_checked() {
        let good = serde_json::to_vec(&Message::overflow()).unwrap();
        assert!(check_line(&good));
        assert!(!check_line(b"{\"type\":\"exit\",\"code\":0}"));
        assert!(!check_line(b"not json"));
        assert!(!check_line(b"{\"type\":\"event\",\"path\":\"/a\"}"));
        let long = format!(
            "{{\"type\":\"subscribed\",\"paths\":[\"{}\"]}}",
            "a".repeat(MAX_LINE)
        );
        assert!(!check_line(long.as_bytes()));
    }
}
