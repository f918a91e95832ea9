//! Request bodies: generated chunked and `Content-Length` bodies (valid, mutated, random)
//! through `BodyReader` (with random read sizes) and `read_bounded` (with random caps).
//! Valid bodies round-trip and leave the pipelined request behind them intact; bad ones
//! fail with `InvalidData` or `UnexpectedEof`; the reader never holds more than its block;
//! `read_bounded` never holds more than its cap and refuses an oversized declared length
//! without reading.

use std::io::{self, Read};

use super::{Pieces, Rng, CASES};
use crate::net::body::{read_bounded, BoundedError, RequestBody};
use crate::net::http::{BodyFraming, RequestReader};

/// `BodyReader`'s largest block.
const BLOCK: usize = 256 * 1024;
const NEXT: &[u8] = b"GET /next HTTP/1.1\r\n\r\n";

/// A chunked encoding of `body` with random chunk sizes, size-line spellings, extensions
/// and trailers.
fn chunked(rng: &mut Rng, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let most = rng.size(64, 2000).max(1);
        let n = rng.range(1, most).min(body.len() - at);
        let mut size = format!("{n:x}");
        if rng.one_in(4) {
            size = size.to_uppercase();
        }
        if rng.one_in(8) {
            size.insert_str(0, "00");
        }
        out.extend_from_slice(size.as_bytes());
        if rng.one_in(4) {
            out.extend_from_slice(b";ext=\"v\"");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body[at..at + n]);
        out.extend_from_slice(b"\r\n");
        at += n;
    }
    out.extend_from_slice(b"0\r\n");
    for _ in 0..rng.below(3) {
        out.extend_from_slice(b"X-Trailer: yes\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn head_for(framing: BodyFraming) -> Vec<u8> {
    match framing {
        BodyFraming::Chunked => b"PUT /w HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec(),
        BodyFraming::Length(n) => {
            format!("PUT /w HTTP/1.1\r\nContent-Length: {n}\r\n\r\n").into_bytes()
        }
        BodyFraming::None => b"PUT /w HTTP/1.1\r\n\r\n".to_vec(),
    }
}

/// Streams the body of the request in `input` with random read sizes: the body or the
/// error kind, then the path of the request that follows (if the body ended well).
fn stream(input: Vec<u8>, rng: &mut Rng) -> (Result<Vec<u8>, io::ErrorKind>, Option<String>) {
    let max_piece = if input.len() < 500 {
        *rng.pick(&[1, 9, 300, 70_000])
    } else {
        *rng.pick(&[61, 300, 70_000])
    };
    let mut rr = RequestReader::new(Pieces::new(input, rng, max_piece));
    let (_, framing) = match rr.read_head() {
        Ok(Some(h)) => h,
        _ => return (Err(io::ErrorKind::InvalidInput), None),
    };
    let most = *rng.pick(&[1, 16, 5000, 70_000]);
    let mut out = vec![0u8; rng.range(1, most)];
    let mut body = Vec::new();
    let result = {
        let mut reader = rr.body(framing);
        loop {
            let want = rng.range(1, out.len());
            let r = reader.read(&mut out[..want]);
            assert!(reader.held() <= BLOCK, "{}", reader.held());
            match r {
                Ok(0) => {
                    assert!(RequestBody::is_done(&reader));
                    break Ok(body);
                }
                Ok(n) => {
                    assert!(n <= want);
                    body.extend_from_slice(&out[..n]);
                }
                Err(e) => {
                    // Sticky: a failed body keeps failing.
                    assert!(reader.read(&mut out[..1]).is_err());
                    break Err(e.kind());
                }
            }
        }
    };
    let next = match &result {
        Ok(_) => rr.read_head().ok().flatten().map(|(h, _)| h.path),
        Err(_) => None,
    };
    (result, next)
}

/// `read_bounded` on the body of the request in `input`.
fn bounded(input: Vec<u8>, cap: usize, rng: &mut Rng) -> Result<Vec<u8>, BoundedError> {
    let mut rr = RequestReader::new(Pieces::new(input, rng, 2000));
    let Ok(Some((_, framing))) = rr.read_head() else {
        return Err(BoundedError::Io(io::ErrorKind::InvalidInput.into()));
    };
    let reads_before = rr.get_ref().reads;
    let mut reader = rr.body(framing);
    let result = read_bounded(&mut reader, cap);
    if let (BodyFraming::Length(n), Err(BoundedError::TooLarge)) = (framing, &result) {
        if n > cap as u64 {
            // Refused from the declared length: nothing read from the stream.
            assert!(!RequestBody::is_done(&reader));
            drop(reader);
            assert_eq!(
                rr.get_ref().reads,
                reads_before,
                "declared too large, yet read"
            );
        }
    }
    if let Ok(b) = &result {
        assert!(b.capacity() <= cap.max(b.len()), "{} > {cap}", b.capacity());
    }
    result
}

#[test]
fn chunked_and_sized_bodies() {
    let (mut round_trips, mut failures) = (0, 0);
    for case in 0..CASES {
        let mut rng = Rng::for_case("body", case);
        let len = rng.size(200, 5000);
        let body = rng.bytes(len);
        let chunked_framing = rng.one_in(3) || body.is_empty();
        let (framing, encoded) = if chunked_framing {
            (BodyFraming::Chunked, chunked(&mut rng, &body))
        } else {
            (BodyFraming::Length(body.len() as u64), body.clone())
        };
        let mut input = head_for(framing);
        let head_len = input.len();
        input.extend_from_slice(&encoded);
        match rng.below(10) {
            0..=5 => {
                input.extend_from_slice(NEXT);
                let (got, next) = stream(input.clone(), &mut rng);
                assert!(got.as_deref() == Ok(&body[..]), "case {case}: {got:?}");
                assert_eq!(next.as_deref(), Some("/next"), "case {case}");
                let cap = if rng.one_in(2) {
                    body.len()
                } else {
                    rng.below(body.len() + 10)
                };
                match bounded(input, cap, &mut rng) {
                    Ok(b) => assert!(b == body && body.len() <= cap, "case {case}"),
                    Err(BoundedError::TooLarge) => assert!(body.len() > cap, "case {case}"),
                    Err(BoundedError::Io(e)) => panic!("case {case}: {e}"),
                }
                round_trips += 1;
            }
            6..=8 => {
                // Damage the body only (the head stays readable).
                let damaged = rng.mutate(&input[head_len..]);
                input.truncate(head_len);
                input.extend_from_slice(&damaged);
                if let (Err(kind), _) = stream(input.clone(), &mut rng) {
                    assert!(
                        matches!(
                            kind,
                            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                        ),
                        "case {case}: {kind:?}"
                    );
                    failures += 1;
                }
                if let Err(BoundedError::Io(e)) = bounded(input, 1 << 20, &mut rng) {
                    assert!(matches!(
                        e.kind(),
                        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                    ));
                }
            }
            _ => {
                // A chunked head followed by random bytes.
                let mut input = head_for(BodyFraming::Chunked);
                let alphabet = b"0123456789abcdefABCDEF\r\n;=x ";
                let len = rng.size(100, 5000);
                input.extend((0..len).map(|_| *rng.pick(alphabet)));
                if let (Err(kind), _) = stream(input, &mut rng) {
                    assert!(matches!(
                        kind,
                        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                    ));
                }
            }
        }
    }
    assert!(
        round_trips > CASES / 2 && failures > CASES / 10,
        "{round_trips} round trips, {failures} failures"
    );
}
