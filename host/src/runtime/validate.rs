//! Admission of uploaded bytes as a reducer: size, compilation, imports,
//! exports, and a trial run.

use std::sync::Arc;

use wasmtime::component::Component;

use super::bindings::ReducerComponentPre;
use super::engine::Shared;
use super::error::{InvalidComponent, bounded};
use super::lowering::FoldLowering;
use super::reducer::Reducer;
use crate::Version;

/// The WASI interfaces (any 0.2.x version) a reducer may import: what Rust's
/// standard library links for pure code. The host satisfies them with a
/// context that grants nothing: an empty environment, an empty stdin,
/// captured stdout and stderr, a fixed hash seed.
const ALLOWED_IMPORTS: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:random/insecure-seed",
];

pub(crate) fn load(shared: &Arc<Shared>, bytes: &[u8]) -> Result<Reducer, InvalidComponent> {
    let limit = shared.limits.component_bytes;
    if bytes.len() > limit {
        return Err(InvalidComponent::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    let component = Component::new(&shared.engine, bytes)
        .map_err(|e| InvalidComponent::NotAComponent(bounded(format!("{e:#}"))))?;
    let disallowed: Vec<String> = component
        .component_type()
        .imports(&shared.engine)
        .map(|(name, _)| name)
        .filter(|name| !is_allowed(name))
        .map(str::to_owned)
        .collect();
    if !disallowed.is_empty() {
        return Err(InvalidComponent::DisallowedImports(disallowed));
    }
    let instance_pre = shared
        .linker
        .instantiate_pre(&component)
        .map_err(|e| InvalidComponent::WrongWorld(bounded(format!("{e:#}"))))?;
    let pre = ReducerComponentPre::new(instance_pre)
        .map_err(|e| InvalidComponent::WrongWorld(bounded(format!("{e:#}"))))?;
    let lowering = FoldLowering::check(pre.instance_pre())
        .map_err(|e| InvalidComponent::WrongWorld(bounded(format!("{e:#}"))))?;
    let mut reducer = Reducer::new(Version::of(bytes), pre, shared.clone(), lowering);
    reducer
        .learn_validates()
        .map_err(InvalidComponent::InitFailed)?;
    reducer
        .start()
        .and_then(|fold| fold.finish())
        .map_err(InvalidComponent::InitFailed)?;
    Ok(reducer)
}

fn is_allowed(import: &str) -> bool {
    match import.split_once('@') {
        Some((interface, version)) => {
            version.starts_with("0.2.") && ALLOWED_IMPORTS.contains(&interface)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::is_allowed;

    #[test]
    fn allowlist_matches_interface_and_version() {
        assert!(is_allowed("wasi:cli/stderr@0.2.6"));
        assert!(is_allowed("wasi:io/streams@0.2.0"));
        assert!(!is_allowed("wasi:filesystem/types@0.2.6"));
        assert!(!is_allowed("wasi:sockets/tcp@0.2.6"));
        assert!(!is_allowed("wasi:cli/stderr@0.3.0"));
        assert!(!is_allowed("wasi:cli/stderr"));
        assert!(!is_allowed("evil:cli/stderr@0.2.6"));
    }
}
