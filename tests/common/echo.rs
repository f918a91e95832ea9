//! Pushing a patterned stream through a proxied connection to an echo server in a sprite
//! and checking every byte that comes back.

use sprites::ProxyStream;
use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;

/// The byte at `i` of the test pattern (not periodic at any power of two that matters).
pub fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// Writes `total` pattern bytes to `conn` from another thread in odd-sized writes, then
/// half-closes it (a later write is `BrokenPipe`); reads everything back here and checks it
/// is exactly those bytes followed by the echo server's `EOF-SEEN`, and that reads keep
/// returning 0 after the end.
pub fn echo_both_ways(conn: &ProxyStream, total: usize) {
    let writer = {
        let mut conn = conn.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 100_003]; // odd sizes: frames never line up with reads
            let mut sent = 0;
            while sent < total {
                let n = buf.len().min(total - sent);
                for (k, b) in buf[..n].iter_mut().enumerate() {
                    *b = pattern(sent + k);
                }
                conn.write_all(&buf[..n]).unwrap();
                sent += n;
            }
            // Half-close: the echo server sees EOF while we still read its answer.
            conn.shutdown(Shutdown::Write).unwrap();
            assert_eq!(conn.write(b"x").unwrap_err().kind(), ErrorKind::BrokenPipe);
        })
    };
    let mut reader = conn;
    let mut buf = vec![0u8; 77_777];
    let (mut got, mut tail) = (0, Vec::new());
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        for (k, &b) in buf[..n].iter().enumerate() {
            let i = got + k;
            if i < total {
                assert_eq!(b, pattern(i), "byte {i} differs");
            } else {
                tail.push(b);
            }
        }
        got += n;
    }
    writer.join().unwrap();
    assert_eq!(got, total + 8, "bytes back");
    assert_eq!(tail, b"EOF-SEEN");
    assert_eq!(reader.read(&mut buf).unwrap(), 0, "EOF stays EOF");
}
