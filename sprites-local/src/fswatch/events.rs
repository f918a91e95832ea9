//! Decoding what `read(2)` returns from an inotify descriptor: a sequence of
//! `struct inotify_event { int wd; u32 mask, cookie, len; char name[len]; }`, the name
//! NUL-padded. Plain byte slicing, no `unsafe`.

/// One event, its name (if any) as UTF-8 (lossily: JSON cannot carry other bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// The watch it came from.
    pub wd: i32,
    /// `IN_*` bits.
    pub mask: u32,
    /// Pairs the two halves of a rename.
    pub cookie: u32,
    /// The entry's name, for an event on a watched directory's entry.
    pub name: Option<String>,
}

/// The size of the fixed part of `struct inotify_event`.
const HEADER: usize = 16;

/// The events in `buf` (what one read returned); a truncated tail is ignored (the kernel
/// never returns one).
pub fn parse(buf: &[u8]) -> impl Iterator<Item = RawEvent> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        let head = buf.get(at..at + HEADER)?;
        let word = |i: usize| [head[i], head[i + 1], head[i + 2], head[i + 3]];
        let len = u32::from_ne_bytes(word(12)) as usize;
        let name_bytes = buf.get(at + HEADER..at + HEADER + len)?;
        at += HEADER + len;
        let end = name_bytes.iter().position(|&b| b == 0).unwrap_or(len);
        let name = (end > 0).then(|| String::from_utf8_lossy(&name_bytes[..end]).into_owned());
        Some(RawEvent {
            wd: i32::from_ne_bytes(word(0)),
            mask: u32::from_ne_bytes(word(4)),
            cookie: u32::from_ne_bytes(word(8)),
            name,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(wd: i32, mask: u32, cookie: u32, name: &[u8], pad: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend(wd.to_ne_bytes());
        v.extend(mask.to_ne_bytes());
        v.extend(cookie.to_ne_bytes());
        v.extend(((name.len() + pad) as u32).to_ne_bytes());
        v.extend(name);
        v.extend(std::iter::repeat_n(0u8, pad));
        v
    }

    #[test]
    fn decodes_events_and_padding() {
        let mut buf = raw(1, libc::IN_CREATE, 0, b"a.txt", 11);
        buf.extend(raw(2, libc::IN_DELETE_SELF, 0, b"", 0));
        buf.extend(raw(1, libc::IN_MOVED_FROM, 9, b"\xffx", 2));
        buf.extend([1, 2, 3]); // a torn tail is ignored
        let got: Vec<RawEvent> = parse(&buf).collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].name.as_deref(), Some("a.txt"));
        assert_eq!(got[0].mask, libc::IN_CREATE);
        assert_eq!(got[1].name, None);
        assert_eq!(got[1].wd, 2);
        assert_eq!(got[2].cookie, 9);
        assert_eq!(got[2].name.as_deref(), Some("\u{fffd}x"));
    }

    #[test]
    fn a_name_longer_than_the_buffer_stops() {
        let mut buf = raw(1, libc::IN_CREATE, 0, b"abc", 1);
        buf.truncate(18);
        assert_eq!(parse(&buf).count(), 0);
    }
}
