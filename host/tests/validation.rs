//! Uploaded bytes are admitted only if they are a reducer component that
//! imports nothing beyond the allowlist; each refusal says why.

mod common;

use common::{load, plugin, runtime};
use eventlogs_host::runtime::{InvalidComponent, Version};

#[test]
fn example_reducers_load_under_their_content_hash() {
    let rt = runtime(|_| {});
    for name in ["payment", "counter"] {
        let reducer = load(&rt, name);
        assert_eq!(reducer.version(), Version::of(&plugin(name)));
    }
}

#[test]
fn arbitrary_bytes_are_not_a_component() {
    let rt = runtime(|_| {});
    let err = rt.load(b"definitely not wasm").err().expect("refused");
    assert!(matches!(err, InvalidComponent::NotAComponent(_)), "{err}");
}

#[test]
fn a_core_module_is_not_a_component() {
    let rt = runtime(|_| {});
    // The smallest valid core WebAssembly module: magic and version 1.
    let err = rt.load(b"\0asm\x01\0\0\0").err().expect("refused");
    assert!(matches!(err, InvalidComponent::NotAComponent(_)), "{err}");
}

#[test]
fn a_component_of_another_world_is_refused() {
    let rt = runtime(|_| {});
    let err = rt
        .load(&plugin("fixture-cli-command"))
        .err()
        .expect("refused");
    assert!(matches!(err, InvalidComponent::WrongWorld(_)), "{err}");
    assert!(
        err.to_string().contains("eventlogs:reducer/reducer@0.2.0"),
        "{err}"
    );
}

#[test]
fn a_disallowed_import_is_refused_by_name() {
    let rt = runtime(|_| {});
    let err = rt
        .load(&plugin("fixture_disallowed_import"))
        .err()
        .expect("refused");
    match &err {
        InvalidComponent::DisallowedImports(names) => {
            assert!(
                names.iter().any(|n| n.starts_with("wasi:filesystem/")),
                "{names:?}"
            );
            assert!(err.to_string().contains("wasi:filesystem/"), "{err}");
        }
        other => panic!("expected a disallowed import, got {other}"),
    }
}

#[test]
fn an_oversized_upload_is_refused_before_compiling() {
    let rt = runtime(|l| l.component_bytes = 1000);
    let bytes = plugin("payment");
    let err = rt.load(&bytes).err().expect("refused");
    match err {
        InvalidComponent::TooLarge { size, limit } => {
            assert_eq!((size, limit), (bytes.len(), 1000));
        }
        other => panic!("expected too large, got {other}"),
    }
}

#[test]
fn a_reducer_whose_initial_aggregate_is_too_large_fails_its_trial_run() {
    // The oversized fixture only grows after an event, so it passes
    // validation; a cap smaller than its initial `{"blob":""}` does not.
    let rt = runtime(|l| l.output_bytes = 4);
    let err = rt
        .load(&plugin("fixture_oversized_aggregate"))
        .err()
        .expect("refused");
    assert!(matches!(err, InvalidComponent::InitFailed(_)), "{err}");
}

#[test]
fn reducers_declare_whether_appends_are_validated() {
    let rt = runtime(|_| {});
    assert!(load(&rt, "payment").validates());
    assert!(!load(&rt, "counter").validates());
}
