//! End to end: sprite management (PROTOCOL.md §5) against a real `sprites-local`.

// sprites-local, which these tests drive, runs on Linux only.
#![cfg(target_os = "linux")]

mod common;

use common::Local;
use sprites::{Client, CreateOptions, Error, ListOptions, SpriteConfig, SpriteUpdate, UrlSettings};

#[test]
fn create_get_update_delete() {
    let local = Local::start();
    let options = CreateOptions::new()
        .label("ci")
        .label("rust")
        .config(SpriteConfig::new().ram_mb(2048).cpus(2))
        .url_settings(UrlSettings::public())
        .wait_for_capacity(true);
    let (sprite, info) = local
        .client
        .create_sprite_with("life-cycle", &options)
        .unwrap();
    assert_eq!(sprite.name(), "life-cycle");
    assert_eq!(info.name, "life-cycle");
    assert_eq!(info.labels, ["ci", "rust"]);
    assert_eq!(info.status.as_deref(), Some("cold"));
    assert!(info.id.is_some() && info.created_at.is_some());

    let fetched = local.client.get_sprite("life-cycle").unwrap();
    assert_eq!(fetched.labels, ["ci", "rust"]);
    assert_eq!(
        fetched.url_settings.and_then(|u| u.auth).as_deref(),
        Some("public")
    );

    let updated = sprite
        .update(&SpriteUpdate::new().labels(["prod"]))
        .unwrap();
    assert_eq!(updated.labels, ["prod"]);
    let updated = sprite
        .update(&SpriteUpdate::new().url_settings(UrlSettings::sprite()))
        .unwrap();
    assert_eq!(
        updated.labels,
        ["prod"],
        "a partial update keeps other fields"
    );
    assert_eq!(
        updated.url_settings.and_then(|u| u.auth).as_deref(),
        Some("sprite")
    );
    let cleared = sprite.update(&SpriteUpdate::new().clear_labels()).unwrap();
    assert!(cleared.labels.is_empty());

    sprite.upgrade().unwrap();
    sprite.delete().unwrap();
    let err = local.client.get_sprite("life-cycle").unwrap_err();
    assert!(err.api().is_some_and(|a| a.is_not_found()), "{err}");
    let err = sprite.delete().unwrap_err();
    assert!(err.api().is_some_and(|a| a.is_not_found()), "{err}");
}

#[test]
fn creating_a_name_twice_is_a_clear_error() {
    let local = Local::start();
    local.client.create_sprite("twice").unwrap();
    let err = local.client.create_sprite("twice").unwrap_err();
    let api = err.api().expect("an API error");
    assert!(api.is_already_exists(), "{api}");
    assert!(api.message.contains("twice"), "{api}");
}

#[test]
fn invalid_names_are_rejected() {
    let local = Local::start();
    assert!(matches!(
        local.client.create_sprite(""),
        Err(Error::InvalidInput(_))
    ));
    for bad in ["UPPER", "has space", "../etc", "-dash"] {
        let err = local.client.create_sprite(bad).unwrap_err();
        assert_eq!(err.api().map(|a| a.status), Some(400), "{bad}: {err}");
    }
}

#[test]
fn list_pages_and_iterates_everything() {
    let local = Local::start();
    for i in 0..7 {
        local.client.create_sprite(&format!("page-{i}")).unwrap();
    }
    local.client.create_sprite("other").unwrap();

    let first = local
        .client
        .list_sprites(&ListOptions::new().prefix("page-").max_results(3))
        .unwrap();
    assert_eq!(first.sprites.len(), 3);
    assert!(first.has_more);
    let token = first.next_token().expect("a continuation token").to_owned();
    let second = local
        .client
        .list_sprites(
            &ListOptions::new()
                .prefix("page-")
                .max_results(3)
                .continuation_token(token),
        )
        .unwrap();
    assert_eq!(second.sprites.len(), 3);
    assert!(
        second
            .sprites
            .iter()
            .all(|s| !first.sprites.iter().any(|f| f.name == s.name))
    );

    let all: Vec<String> = local
        .client
        .sprites_with(ListOptions::new().prefix("page-").max_results(2))
        .map(|s| s.unwrap().name)
        .collect();
    assert_eq!(all, (0..7).map(|i| format!("page-{i}")).collect::<Vec<_>>());
    assert_eq!(local.client.sprites().count(), 8);
    assert!(first.stats().is_some(), "the first page carries org stats");
}

#[test]
fn a_wrong_token_is_401_everywhere() {
    let local = Local::start();
    local.client.create_sprite("guarded").unwrap();
    let intruder = Client::builder()
        .base_url(local.url())
        .token("wrong")
        .build()
        .unwrap();
    let err = intruder.sprites().next().unwrap().unwrap_err();
    assert!(err.api().is_some_and(|a| a.is_unauthorized()), "{err}");
    let err = intruder.get_sprite("guarded").unwrap_err();
    assert_eq!(err.api().map(|a| a.status), Some(401));
    let err = intruder.create_sprite("x").unwrap_err();
    assert_eq!(err.api().map(|a| a.status), Some(401));
    let err = intruder
        .sprite("guarded")
        .command("true")
        .output()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert_eq!(
        Error::from_io(&err).and_then(Error::api).map(|a| a.status),
        Some(401)
    );
}

#[test]
fn an_unknown_sprite_is_404_everywhere() {
    let local = Local::start();
    let ghost = local.client.sprite("ghost");
    assert!(
        ghost
            .info()
            .unwrap_err()
            .api()
            .is_some_and(|a| a.is_not_found())
    );
    assert!(
        ghost
            .update(&SpriteUpdate::new().clear_labels())
            .unwrap_err()
            .api()
            .is_some_and(|a| a.is_not_found())
    );
    let err = ghost.command("true").output().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert_eq!(
        Error::from_io(&err).and_then(Error::api).map(|a| a.status),
        Some(404)
    );
}

#[test]
fn sprites_survive_a_server_restart() {
    let mut local = Local::start();
    local
        .client
        .create_sprite_with("durable", &CreateOptions::new().label("keep"))
        .unwrap();
    let data_dir = local.dir.path().join("data");
    local.server.take().unwrap().shutdown();
    let server = sprites_local::Server::builder()
        .addr("127.0.0.1:0")
        .token("test-token")
        .data_dir(&data_dir)
        .runtime(common::test_runtime())
        .start()
        .unwrap();
    let client = Client::builder()
        .base_url(server.url())
        .token("test-token")
        .build()
        .unwrap();
    assert_eq!(client.get_sprite("durable").unwrap().labels, ["keep"]);
    let out = client
        .sprite("durable")
        .command("echo")
        .arg("still here")
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"still here\n");
}

#[test]
fn unreachable_server_is_a_transport_error() {
    // Bind then drop a listener so the port is (almost certainly) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .token("t")
        .build()
        .unwrap();
    assert!(matches!(client.get_sprite("x"), Err(Error::Transport(_))));
    let err = client.sprite("x").command("true").output().unwrap_err();
    assert!(
        matches!(Error::from_io(&err), Some(Error::Transport(_))),
        "{err:?}"
    );
}

#[test]
fn client_configuration_errors() {
    assert!(matches!(Client::builder().build(), Err(Error::Config(_))));
    assert!(matches!(
        Client::builder().token(" ").build(),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        Client::builder().token("t").base_url("ftp://x").build(),
        Err(Error::Config(_))
    ));
}

#[test]
fn temporary_sprites_delete_themselves_and_get_or_create_reuses() {
    let local = Local::start();
    let name = {
        let temp = local.client.create_temp_sprite("tmp").unwrap();
        assert!(temp.name().starts_with("tmp-"));
        assert!(local.client.get_sprite(temp.name()).is_ok());
        temp.name().to_owned()
    };
    let err = local.client.get_sprite(&name).unwrap_err();
    assert!(err.api().is_some_and(|a| a.is_not_found()), "{err}");

    let kept = local.client.create_temp_sprite("tmp").unwrap().keep();
    assert!(local.client.get_sprite(kept.name()).is_ok());
    let explicit = local.client.create_temp_sprite("tmp").unwrap();
    let explicit_name = explicit.name().to_owned();
    explicit.delete().unwrap();
    assert!(local.client.get_sprite(&explicit_name).is_err());

    let first = local.client.get_or_create_sprite("reused").unwrap();
    first.fs().write("/tmp/reused-marker", "1").unwrap();
    let again = local.client.get_or_create_sprite("reused").unwrap();
    assert_eq!(again.name(), "reused");
    assert_eq!(
        local
            .client
            .sprites_with(ListOptions::new().prefix("reused"))
            .count(),
        1
    );
    // Racing creators all end up with the one sprite.
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let client = local.client.clone();
            std::thread::spawn(move || client.get_or_create_sprite("raced").unwrap())
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap().name(), "raced");
    }
    let err = local.client.get_or_create_sprite("BAD NAME").unwrap_err();
    assert_eq!(err.api().map(|a| a.status), Some(400));
}
