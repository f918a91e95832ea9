//! End to end: a sprite's policies (PROTOCOL.md §13) through the client against a real
//! `sprites-local`: round trips, the server's 400s as typed errors, and (under
//! `SPRITES_TEST_RUNTIME=sandbox`) what a sprite sees of them.

// sprites-local, which these tests drive, runs on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::{Local, test_runtime};
use sprites::{
    Error, MemoryPolicy, NetworkPolicy, NetworkRule, PrivilegesPolicy, ResourcesPolicy, RuleAction,
};

fn sandbox() -> bool {
    test_runtime() == sprites_local::Runtime::Sandbox
}

#[test]
fn network_policy_round_trip() {
    let local = Local::start();
    let sprite = local.sprite("netpol");
    assert_eq!(sprite.network_policy().unwrap(), NetworkPolicy::default());

    let policy = NetworkPolicy::new([
        NetworkRule::include_defaults(),
        NetworkRule::allow("example.com"),
        NetworkRule::allow("*.example.com"),
        NetworkRule::deny("blocked.com"),
    ]);
    sprite.update_network_policy(&policy).unwrap();
    let got = sprite.network_policy().unwrap();
    assert_eq!(got, policy);
    assert!(matches!(
        &got.rules[3],
        NetworkRule::Domain { domain, action: RuleAction::Deny } if domain == "blocked.com"
    ));
    if sandbox() {
        // Visible, read-only, inside the sprite.
        let out = sprite
            .command("cat")
            .arg("/.sprite/policy/network.json")
            .output()
            .unwrap();
        let seen: NetworkPolicy = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(seen, policy);
        let status = sprite
            .command("sh")
            .args(["-c", "echo '{}' > /.sprite/policy/network.json"])
            .status()
            .unwrap();
        assert!(!status.success());
        // A denied name is refused by the sprite's resolver, whatever the upstream.
        let status = sprite
            .command("getent")
            .args(["hosts", "blocked.com"])
            .status()
            .unwrap();
        assert!(!status.success());
    }
    sprite
        .update_network_policy(&NetworkPolicy::default())
        .unwrap();
    assert!(sprite.network_policy().unwrap().rules.is_empty());
}

#[test]
fn invalid_rules_are_api_errors_with_the_reason() {
    let local = Local::start();
    let sprite = local.sprite("badpol");
    for (rule, want) in [
        (NetworkRule::allow("a.*.com"), "malformed wildcard"),
        (NetworkRule::deny("bad domain.com"), "invalid domain"),
        (
            NetworkRule::Include {
                include: "everything".into(),
            },
            "unknown include",
        ),
    ] {
        let err = sprite
            .update_network_policy(&NetworkPolicy::new([rule]))
            .unwrap_err();
        match err {
            Error::Api(api) => {
                assert_eq!(api.status, 400);
                assert!(api.message.contains(want), "{}", api.message);
            }
            other => panic!("{other:?}"),
        }
    }
    let bad = PrivilegesPolicy {
        profile: Some("root".into()),
        ..Default::default()
    };
    let err = sprite.update_privileges_policy(&bad).unwrap_err();
    assert!(
        matches!(err, Error::Api(ref a) if a.status == 400),
        "{err:?}"
    );
    let err = local.client.sprite("missing").network_policy().unwrap_err();
    assert!(
        matches!(err, Error::Api(ref a) if a.status == 404),
        "{err:?}"
    );
}

#[test]
fn privileges_and_resources_round_trip() {
    let local = Local::start();
    let sprite = local.sprite("privres");
    let default = sprite.privileges_policy().unwrap();
    assert_eq!(default.profile.as_deref(), Some(""));
    let p = PrivilegesPolicy {
        profile: Some("standard".into()),
        devices: Some(vec!["/dev/fuse".into()]),
        no_new_privileges: Some(true),
    };
    sprite.update_privileges_policy(&p).unwrap();
    assert_eq!(sprite.privileges_policy().unwrap(), p);
    if sandbox() {
        let out = sprite
            .command("grep")
            .args(["NoNewPrivs", "/proc/self/status"])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "NoNewPrivs:\t1"
        );
    }
    sprite.delete_privileges_policy().unwrap();
    assert_eq!(sprite.privileges_policy().unwrap(), default);

    assert_eq!(
        sprite.resources_policy().unwrap(),
        ResourcesPolicy::default()
    );
    let r = ResourcesPolicy {
        memory: Some(MemoryPolicy {
            limit_mb: Some(512),
            autoscale: Some(true),
        }),
    };
    sprite.update_resources_policy(&r).unwrap();
    assert_eq!(sprite.resources_policy().unwrap(), r);
    if sandbox() {
        let out = sprite
            .command("sh")
            .args(["-c", "ulimit -d"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "524288");
    }
    sprite.delete_resources_policy().unwrap();
    assert_eq!(
        sprite.resources_policy().unwrap(),
        ResourcesPolicy::default()
    );
}
