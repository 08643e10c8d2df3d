//! The reducers this process can run, by name: every loaded version, and
//! which one is active.
//!
//! This registry lives in memory. Versions stored in the database, and
//! activations seen across processes, are still to come (issue 3); the log
//! manager already resolves reducers only through it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::runtime::{Reducer, Version};

/// Loaded reducer versions by name, with one active version per name.
/// Activation is an atomic swap: a fold that already holds a [`Reducer`]
/// finishes on it.
#[derive(Default)]
pub struct Registry {
    names: RwLock<HashMap<String, Named>>,
}

#[derive(Default)]
struct Named {
    versions: HashMap<Version, Reducer>,
    active: Option<Version>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds `reducer` under `name` and makes it the active version.
    pub fn activate(&self, name: &str, reducer: Reducer) {
        let mut names = self.names.write().expect("registry lock");
        let named = names.entry(name.to_owned()).or_default();
        named.active = Some(reducer.version());
        named.versions.insert(reducer.version(), reducer);
    }

    /// Makes an already loaded version active again (a rollback). False if
    /// the name has no such version.
    pub fn reactivate(&self, name: &str, version: Version) -> bool {
        let mut names = self.names.write().expect("registry lock");
        match names.get_mut(name) {
            Some(named) if named.versions.contains_key(&version) => {
                named.active = Some(version);
                true
            }
            _ => false,
        }
    }

    /// The active version of `name`.
    pub fn active(&self, name: &str) -> Option<Reducer> {
        let names = self.names.read().expect("registry lock");
        let named = names.get(name)?;
        named.versions.get(&named.active?).cloned()
    }

    /// A specific version of `name`.
    pub fn version(&self, name: &str, version: Version) -> Option<Reducer> {
        let names = self.names.read().expect("registry lock");
        names.get(name)?.versions.get(&version).cloned()
    }
}
