//! WebSocket client frames: generated message sequences (fragmented, with control frames
//! interleaved, odd length encodings; valid, mutated, random) through `MessageReader`, part
//! of them arriving with the upgrade request and the rest in random pieces. Valid sequences
//! come out message for message; everything else ends in a typed error with one of our
//! close codes; and memory follows the bytes that arrived, never a declared length.

use super::{Pieces, Rng, CASES};
use crate::net::ws::{opcode, Message, MessageReader, ReadError, MAX_MESSAGE, READ_BUF};

/// How a frame spells its payload length.
#[derive(Clone, Copy)]
enum LenForm {
    Minimal,
    /// The 16-bit form even for a short payload (legal, if wasteful).
    Forced16,
    /// The 64-bit form even for a short payload.
    Forced64,
}

fn frame(rng: &mut Rng, fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    let form = match rng.below(10) {
        0 if payload.len() <= 0xffff => LenForm::Forced16,
        1 => LenForm::Forced64,
        _ => LenForm::Minimal,
    };
    let mut out = vec![if fin { 0x80 } else { 0 } | op];
    let len = payload.len();
    match form {
        LenForm::Minimal if len < 126 => out.push(0x80 | len as u8),
        LenForm::Minimal | LenForm::Forced16 if len <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    let mask = (rng.next() as u32).to_ne_bytes();
    out.extend_from_slice(&mask);
    let at = out.len();
    out.extend_from_slice(payload);
    crate::net::ws::unmask(&mut out[at..], mask);
    out
}

fn text(rng: &mut Rng, n: usize) -> Vec<u8> {
    let pieces = ["a", "Z", " ", "{\"type\":\"signal\"}", "é", "€", "😀", "\n"];
    let mut s = String::new();
    while s.len() < n {
        s.push_str(pieces[rng.below(pieces.len())]);
    }
    s.into_bytes()
}

/// A control frame to slip between fragments (and the message it reads as).
fn control(rng: &mut Rng) -> (Vec<u8>, Message) {
    let len = rng.below(126);
    let payload = rng.bytes(len);
    if rng.one_in(2) {
        (
            frame(rng, true, opcode::PING, &payload),
            Message::Ping(payload),
        )
    } else {
        (frame(rng, true, opcode::PONG, &payload), Message::Pong)
    }
}

/// A valid sequence of client frames and the messages it must read as.
fn valid(rng: &mut Rng) -> (Vec<u8>, Vec<Message>) {
    let mut bytes = Vec::new();
    let mut messages = Vec::new();
    for _ in 0..rng.range(1, 5) {
        if rng.one_in(4) {
            let (f, m) = control(rng);
            bytes.extend(f);
            messages.push(m);
            continue;
        }
        let is_text = rng.one_in(2);
        let len = if rng.one_in(2000) {
            rng.range(70_000, 140_000)
        } else {
            rng.size(64, 1000)
        };
        let payload = if is_text {
            text(rng, len)
        } else {
            rng.bytes(len)
        };
        let parts = rng.range(1, 4);
        let mut at = 0;
        for i in 0..parts {
            let end = if i + 1 == parts {
                payload.len()
            } else {
                rng.range(at, payload.len())
            };
            let op = match (i, is_text) {
                (0, true) => opcode::TEXT,
                (0, false) => opcode::BINARY,
                _ => opcode::CONTINUATION,
            };
            bytes.extend(frame(rng, i + 1 == parts, op, &payload[at..end]));
            at = end;
            if i + 1 < parts && rng.one_in(3) {
                let (f, m) = control(rng);
                bytes.extend(f);
                messages.push(m);
            }
        }
        messages.push(if is_text {
            Message::Text(String::from_utf8(payload).unwrap_or_default())
        } else {
            Message::Binary(payload)
        });
    }
    if rng.one_in(3) {
        let code = *rng.pick(&[1000u16, 1001, 4000]);
        let mut p = code.to_be_bytes().to_vec();
        p.extend_from_slice(b"bye");
        bytes.extend(frame(rng, true, opcode::CLOSE, &p));
        messages.push(Message::Close(Some(code)));
    }
    (bytes, messages)
}

/// A reader over `input`: a random prefix arrives with the upgrade, the rest in pieces.
fn reader(input: &[u8], rng: &mut Rng) -> MessageReader<Pieces> {
    let split = rng.below(input.len() + 1);
    let max_piece = if input.len() < 500 {
        *rng.pick(&[1, 5, 200, 100_000])
    } else {
        *rng.pick(&[61, 200, 100_000])
    };
    MessageReader::new(
        Pieces::new(input[split..].to_vec(), rng, max_piece),
        input[..split].to_vec(),
    )
}

/// What a reader may hold after being fed `input`: its read buffer, and payloads that grew
/// with the bytes received (at most doubling).
fn bound(input: &[u8]) -> usize {
    3 * input.len() + 3 * READ_BUF
}

fn check_error(e: &ReadError, case: u64) {
    match e {
        ReadError::Eof | ReadError::Io => {}
        ReadError::Protocol(code, _) => {
            assert!([1002, 1007, 1009].contains(code), "case {case}: {code}")
        }
    }
}

#[test]
fn client_frames() {
    let (mut round_trips, mut errors) = (0, 0);
    for case in 0..CASES {
        let mut rng = Rng::for_case("ws", case);
        let (bytes, expected) = valid(&mut rng);
        match rng.below(10) {
            0..=5 => {
                let mut r = reader(&bytes, &mut rng);
                for (i, want) in expected.iter().enumerate() {
                    match r.read_message() {
                        Ok(got) => assert!(&got == want, "case {case} message {i}"),
                        Err(e) => panic!("case {case} message {i}: {e:?}"),
                    }
                    assert!(r.held() <= bound(&bytes), "case {case}: {}", r.held());
                }
                if !matches!(expected.last(), Some(Message::Close(_))) {
                    assert!(
                        matches!(r.read_message(), Err(ReadError::Eof)),
                        "case {case}"
                    );
                }
                round_trips += 1;
            }
            choice => {
                let input = if choice == 9 {
                    // Random bytes, masked-frame-ish more often than not.
                    let len = rng.size(40, 2000);
                    let mut b = rng.bytes(len);
                    if let Some(x) = b.get_mut(1) {
                        *x |= 0x80;
                    }
                    b
                } else {
                    rng.mutate(&bytes)
                };
                let mut r = reader(&input, &mut rng);
                for _ in 0..=input.len() {
                    let got = r.read_message();
                    assert!(r.held() <= bound(&input), "case {case}: {}", r.held());
                    match got {
                        Ok(Message::Text(t)) => assert!(t.len() <= MAX_MESSAGE),
                        Ok(Message::Close(_)) => break,
                        Ok(_) => {}
                        Err(e) => {
                            check_error(&e, case);
                            errors += 1;
                            break;
                        }
                    }
                }
            }
        }
    }
    assert!(
        round_trips > CASES / 2 && errors > CASES / 10,
        "{round_trips} round trips, {errors} errors"
    );
}

/// A header that declares up to 16 MiB, followed by a few bytes and silence: the reader
/// holds what arrived, not what was declared.
#[test]
fn declared_lengths_cost_nothing_until_the_bytes_arrive() {
    for case in 0..CASES / 10 {
        let mut rng = Rng::for_case("ws-declared", case);
        let declared = if case == 0 {
            MAX_MESSAGE as u64
        } else {
            rng.range(MAX_MESSAGE / 2, MAX_MESSAGE) as u64
        };
        let mut input = vec![0x82, 0x80 | 127];
        input.extend_from_slice(&declared.to_be_bytes());
        input.extend_from_slice(&[1, 2, 3, 4]);
        let extra = if case == 0 { 10 } else { rng.below(5000) };
        input.extend(rng.bytes(extra));
        let mut r = reader(&input, &mut rng);
        assert!(
            matches!(r.read_message(), Err(ReadError::Io)),
            "case {case}"
        );
        assert!(
            r.held() < 4 * READ_BUF,
            "case {case}: {} bytes held for {} received",
            r.held(),
            input.len()
        );
    }
    // One byte over the cap is refused from the header alone.
    let mut input = vec![0x82, 0x80 | 127];
    input.extend_from_slice(&(MAX_MESSAGE as u64 + 1).to_be_bytes());
    input.extend_from_slice(&[1, 2, 3, 4]);
    let mut r = MessageReader::new(&[][..], input);
    assert!(matches!(
        r.read_message(),
        Err(ReadError::Protocol(1009, _))
    ));
}
