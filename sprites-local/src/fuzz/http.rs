//! Request heads: generated requests (valid, mutated, random) through
//! `RequestReader::read_head` and through a `HeadBuffer` fed piece by piece as the reactor
//! feeds it. Both must agree with one parse of the whole input, round-trip valid heads
//! exactly, answer everything else with a typed `BadRequest` of an expected status, and
//! never hold more than `MAX_HEAD` of head.

use super::{Pieces, Rng, CASES};
use crate::net::http::{
    parse_head, BadRequest, BodyFraming, HeadBuffer, RequestHead, RequestReader, MAX_HEAD,
};

const TCHAR: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-!#$%&'*+.^_`|~";
const PATH: &[u8] = b"abcxyzABC0123456789-._~%=&!$'()*+,;:@";
const VALUE: &[u8] = b"abcdefghijklmnopqrstuvwxyz ABC0123456789-_.,;:=/\"'()[]{}<>?@!#$%^&*+\t";

/// What a generated valid request must parse to.
struct Expected {
    method: String,
    path: String,
    query: String,
    minor: u8,
    headers: Vec<(String, String)>,
    framing: BodyFraming,
}

fn token(rng: &mut Rng, alphabet: &[u8], min: usize, max: usize) -> String {
    let len = rng.range(min, max);
    (0..len).map(|_| *rng.pick(alphabet) as char).collect()
}

fn valid_request(rng: &mut Rng) -> (Vec<u8>, Expected) {
    let method = if rng.one_in(4) {
        token(rng, TCHAR, 1, 10)
    } else {
        (*rng.pick(&["GET", "POST", "PUT", "DELETE", "HEAD"])).to_owned()
    };
    let mut path = String::new();
    for _ in 0..rng.range(0, 5) {
        path.push('/');
        path.push_str(&token(rng, PATH, 0, 12));
    }
    if path.is_empty() || rng.one_in(8) {
        path.push('/');
    }
    let query = if rng.one_in(2) {
        token(rng, PATH, 0, 30)
    } else {
        String::new()
    };
    let minor = if rng.one_in(4) { 0 } else { 1 };
    let mut headers = Vec::new();
    for _ in 0..rng.range(0, 8) {
        let name = token(rng, TCHAR, 1, 16);
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        // No whitespace at either end: parsers may trim it.
        let mut value = token(rng, VALUE, 0, 40);
        value = value.trim().to_owned();
        headers.push((name, value));
    }
    let framing = match rng.below(4) {
        0 => {
            let n = rng.range(1, 100_000) as u64;
            headers.push(("Content-Length".to_owned(), n.to_string()));
            BodyFraming::Length(n)
        }
        1 => {
            headers.push(("Transfer-Encoding".to_owned(), "chunked".to_owned()));
            BodyFraming::Chunked
        }
        2 if rng.one_in(2) => {
            headers.push(("Content-Length".to_owned(), "0".to_owned()));
            BodyFraming::None
        }
        _ => BodyFraming::None,
    };
    let target = if query.is_empty() && rng.one_in(2) {
        path.clone()
    } else {
        format!("{path}?{query}")
    };
    let mut raw = format!("{method} {target} HTTP/1.{minor}\r\n").into_bytes();
    for (k, v) in &headers {
        let sep = if rng.one_in(4) { ":" } else { ": " };
        raw.extend_from_slice(format!("{k}{sep}{v}\r\n").as_bytes());
    }
    raw.extend_from_slice(b"\r\n");
    let expected = Expected {
        method,
        path,
        query,
        minor,
        headers: headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        framing,
    };
    (raw, expected)
}

fn random_bytes(rng: &mut Rng) -> Vec<u8> {
    let alphabet = b"GET /v1 HTTP/1.1\r\n:abc\t\x00\xff0123456789";
    let len = rng.size(120, 1500);
    (0..len)
        .map(|_| {
            if rng.one_in(8) {
                rng.next() as u8
            } else {
                *rng.pick(alphabet)
            }
        })
        .collect()
}

/// The outcome all parsing paths must agree on.
#[derive(Debug, PartialEq)]
enum Outcome {
    Head(RequestHead, BodyFraming),
    /// The input ended before a complete head: cleanly (nothing but blank lines), or with
    /// the 400 a cut request gets.
    Clean,
    Bad(u16),
}

/// Pieces of at most this size: tiny ones only for small inputs, so a case stays cheap.
fn max_piece(rng: &mut Rng, len: usize) -> usize {
    if len < 500 {
        *rng.pick(&[1, 7, 64, 4096])
    } else {
        *rng.pick(&[61, 700, 4096])
    }
}

/// `read_head` over the input in random pieces. Checks that what was read past a head is
/// what followed it.
fn via_reader(input: &[u8], rest_at: Option<usize>, rng: &mut Rng) -> Outcome {
    let most = max_piece(rng, input.len());
    let mut reader = RequestReader::new(Pieces::new(input.to_vec(), rng, most));
    let result = reader.read_head();
    assert!(reader.buffered().len() <= MAX_HEAD);
    match result {
        Ok(Some((head, framing))) => {
            if let Some(at) = rest_at {
                assert!(input[at..].starts_with(reader.buffered()));
            }
            Outcome::Head(head, framing)
        }
        Ok(None) => Outcome::Clean,
        Err(BadRequest { status, .. }) => Outcome::Bad(status),
    }
}

/// A `HeadBuffer` fed piece by piece, as the reactor feeds it, then told of the end.
/// Checks that it never holds more than `MAX_HEAD`.
fn via_reactor(input: &[u8], rng: &mut Rng) -> Outcome {
    let mut head = HeadBuffer::new();
    let most = max_piece(rng, input.len());
    let mut at = 0;
    loop {
        let room = head.room();
        if at == input.len() || room == 0 {
            break;
        }
        let piece = rng.range(1, most).min(room);
        let end = (at + piece).min(input.len());
        let result = head.push(&input[at..end]);
        at = end;
        assert!(head.capacity() <= MAX_HEAD, "{}", head.capacity());
        match result {
            Ok(Some(p)) => return Outcome::Head(p.head, p.framing),
            Ok(None) => {}
            Err(BadRequest { status, .. }) => return Outcome::Bad(status),
        }
    }
    match head.at_eof() {
        Ok(()) => Outcome::Clean,
        Err(BadRequest { status, .. }) => Outcome::Bad(status),
    }
}

/// The reference: one parse of the whole input (blank lines before the request line
/// dropped, as a server may), at most `MAX_HEAD` of it, as if it had all arrived at once.
fn oracle(input: &[u8]) -> Outcome {
    let mut start = 0;
    loop {
        match &input[start..] {
            [b'\n', ..] => start += 1,
            [b'\r', b'\n', ..] => start += 2,
            _ => break,
        }
    }
    let input = &input[start..];
    if input.is_empty() || input == b"\r" {
        return Outcome::Clean;
    }
    match parse_head(input) {
        Ok(Some(p)) => Outcome::Head(p.head, p.framing),
        // More than MAX_HEAD without a head is a 431 already; less is a cut request.
        Ok(None) => Outcome::Bad(400),
        Err(BadRequest { status, .. }) => Outcome::Bad(status),
    }
}

#[test]
fn request_heads() {
    let (mut valid, mut bad) = (0, 0);
    for case in 0..CASES {
        let mut rng = Rng::for_case("http", case);
        let kind = rng.below(10);
        let (input, expected, rest_at) = match kind {
            0..=4 => {
                let (mut raw, exp) = valid_request(&mut rng);
                let at = raw.len();
                let len = rng.size(20, 200);
                let rest = rng.bytes(len);
                raw.extend_from_slice(&rest);
                (raw, Some(exp), Some(at))
            }
            5..=7 => {
                let (raw, _) = valid_request(&mut rng);
                (rng.mutate(&raw), None, None)
            }
            8 if rng.one_in(100) => {
                // A head longer than any we accept.
                let mut raw = b"GET / HTTP/1.1\r\nX: ".to_vec();
                raw.extend(std::iter::repeat_n(b'a', MAX_HEAD + rng.below(1000)));
                raw.extend_from_slice(b"\r\n\r\n");
                (raw, None, None)
            }
            _ => (random_bytes(&mut rng), None, None),
        };
        let a = via_reader(&input, rest_at, &mut rng);
        let b = via_reactor(&input, &mut rng);
        let c = oracle(&input);
        assert_eq!(a, c, "case {case}: {:?}", String::from_utf8_lossy(&input));
        assert_eq!(b, c, "case {case}: {:?}", String::from_utf8_lossy(&input));
        if let Outcome::Bad(status) = a {
            assert!(
                [400, 413, 431, 501].contains(&status),
                "case {case}: status {status}"
            );
            bad += 1;
        }
        if let Some(exp) = expected {
            let Outcome::Head(head, framing) = a else {
                panic!("case {case}: valid request not parsed: {a:?}");
            };
            assert_eq!(head.method, exp.method, "case {case}");
            assert_eq!(head.path, exp.path, "case {case}");
            assert_eq!(head.query, exp.query, "case {case}");
            assert_eq!(head.minor_version, exp.minor, "case {case}");
            assert_eq!(head.headers, exp.headers, "case {case}");
            assert_eq!(framing, exp.framing, "case {case}");
            valid += 1;
        }
    }
    // The generator does produce both kinds in quantity.
    assert!(
        valid > CASES / 3 && bad > CASES / 10,
        "{valid} valid, {bad} bad"
    );
}
