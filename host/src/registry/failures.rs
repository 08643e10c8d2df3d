//! Stored versions that failed to compile in this process, remembered with
//! a growing back-off: readers asking for such a version again get the same
//! error at once instead of compiling it again, until the back-off ends.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::RegistryError;
use crate::Version;
use crate::runtime::{FailureKind, InvalidComponent, ReducerError};

/// Failed compilations by name and version.
pub(crate) struct Failures {
    entries: Mutex<HashMap<(String, Version), Failure>>,
    /// The first back-off; each further failure doubles it.
    first: Duration,
    /// The longest back-off.
    longest: Duration,
}

struct Failure {
    error: RegistryError,
    retry_at: Instant,
    failures: u32,
}

impl Failures {
    /// Back-offs start at `first` and double up to `longest`.
    pub(crate) fn new(first: Duration, longest: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            first,
            longest,
        }
    }

    /// The error `name`'s `version` last failed with, while its back-off
    /// lasts.
    pub(crate) fn current(&self, name: &str, version: Version) -> Option<RegistryError> {
        let entries = self.entries.lock().expect("failures lock");
        let failure = entries.get(&(name.to_owned(), version))?;
        (Instant::now() < failure.retry_at).then(|| failure.error.clone())
    }

    /// Remembers that compiling `version` failed with `error`, if it is the
    /// component's fault (a busy host is not remembered).
    pub(crate) fn record(&self, name: &str, version: Version, error: &RegistryError) {
        if !is_the_components_fault(error) {
            return;
        }
        let mut entries = self.entries.lock().expect("failures lock");
        let failures = entries
            .get(&(name.to_owned(), version))
            .map_or(1, |f| f.failures.saturating_add(1));
        let back_off = self
            .first
            .saturating_mul(1 << (failures - 1).min(20))
            .min(self.longest);
        entries.insert(
            (name.to_owned(), version),
            Failure {
                error: error.clone(),
                retry_at: Instant::now() + back_off,
                failures,
            },
        );
    }

    /// Forgets a version that compiled after all.
    pub(crate) fn clear(&self, name: &str, version: Version) {
        let mut entries = self.entries.lock().expect("failures lock");
        entries.remove(&(name.to_owned(), version));
    }
}

/// Whether compiling again would fail the same way: the bytes are invalid
/// here. A trial run that found no free instance slot, or a database that
/// did not answer, may succeed at the next attempt.
fn is_the_components_fault(error: &RegistryError) -> bool {
    match error {
        RegistryError::Invalid(InvalidComponent::InitFailed(ReducerError {
            kind: FailureKind::Instantiation(_),
            ..
        })) => false,
        RegistryError::Invalid(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid() -> RegistryError {
        RegistryError::Invalid(InvalidComponent::NotAComponent("garbage".into()))
    }

    #[test]
    fn a_failure_is_answered_until_its_back_off_ends_and_the_back_off_doubles() {
        let failures = Failures::new(Duration::from_millis(40), Duration::from_millis(70));
        let version = Version::of(b"garbage");
        assert!(failures.current("a", version).is_none());
        failures.record("a", version, &invalid());
        assert!(failures.current("a", version).is_some());
        assert!(failures.current("b", version).is_none());
        std::thread::sleep(Duration::from_millis(50));
        assert!(failures.current("a", version).is_none(), "40 ms back-off");
        failures.record("a", version, &invalid());
        std::thread::sleep(Duration::from_millis(50));
        assert!(failures.current("a", version).is_some(), "doubled to 70 ms");
        std::thread::sleep(Duration::from_millis(30));
        assert!(failures.current("a", version).is_none(), "capped at 70 ms");
        failures.record("a", version, &invalid());
        failures.clear("a", version);
        assert!(failures.current("a", version).is_none());
    }

    #[test]
    fn a_busy_host_or_database_is_not_remembered() {
        let failures = Failures::new(Duration::from_secs(60), Duration::from_secs(60));
        let version = Version::of(b"x");
        failures.record(
            "a",
            version,
            &RegistryError::Store(crate::store::StoreError::Unavailable("down".into())),
        );
        assert!(failures.current("a", version).is_none());
    }
}
