//! The filesystem path resolver: random paths and working directories built from the
//! pieces that matter (`/`, `.`, `..`, names, NUL, non-ASCII) through `fsops::resolve`,
//! checked against a simple model: the result is absolute and clean, resolving it again
//! changes nothing, and it never climbs above `/`.

use super::{Rng, CASES};
use crate::fsops::resolve;

fn path(rng: &mut Rng) -> String {
    let parts = [
        "/", "/", ".", "..", "a", "bc", "é", "\0", " ", "//", "...", "-",
    ];
    let len = rng.size(8, 60);
    (0..len).map(|_| *rng.pick(&parts)).collect()
}

/// What `resolve` must give: components of the working directory (itself taken from `/`)
/// then of the path, `.` dropped, `..` popping (never above `/`).
fn model(wd: Option<&str>, p: &str) -> String {
    let mut stack: Vec<&str> = Vec::new();
    let base = if p.starts_with('/') {
        ""
    } else {
        wd.unwrap_or("/")
    };
    for part in base.split('/').chain(p.split('/')) {
        match part {
            "" | "." => {}
            ".." => {
                stack.pop();
            }
            name => stack.push(name),
        }
    }
    format!("/{}", stack.join("/"))
}

#[test]
fn resolved_paths_are_absolute_and_clean() {
    for case in 0..CASES {
        let mut rng = Rng::for_case("paths", case);
        let p = path(&mut rng);
        let wd = if rng.one_in(3) {
            None
        } else {
            Some(path(&mut rng))
        };
        let got = resolve(wd.as_deref(), &p);
        if p.is_empty() {
            let e = got.expect_err("an empty path is refused");
            assert_eq!(e.errno, libc::EINVAL, "case {case}");
            continue;
        }
        let got = got.unwrap_or_else(|e| panic!("case {case}: {e:?}"));
        assert_eq!(got, model(wd.as_deref(), &p), "case {case}: {wd:?} {p:?}");
        assert!(got.starts_with('/'), "case {case}");
        assert!(got == "/" || !got.ends_with('/'), "case {case}");
        assert!(
            got == "/"
                || got
                    .split('/')
                    .skip(1)
                    .all(|c| !c.is_empty() && c != "." && c != ".."),
            "case {case}: {got:?}"
        );
        // Clean means stable: resolving again, from anywhere, changes nothing.
        assert_eq!(resolve(None, &got).ok().as_deref(), Some(got.as_str()));
        assert_eq!(
            resolve(Some("/elsewhere"), &got).ok().as_deref(),
            Some(got.as_str())
        );
    }
}
