//! Deploying reducers, guarded: before a new version becomes active it
//! replays a sample of the existing logs bound to its name — the most
//! recently appended first, within a time budget — and a version that fails
//! on any of them is refused with their ids, unless the operator forces it.

use std::time::Instant;

use super::fold::Start;
use super::{LogError, LogManager};
use crate::LogId;
use crate::Version;
use crate::cache::CacheKey;
use crate::registry::{Deployed, ReducerInfo};
use crate::runtime::{Reducer, ReducerError};
use crate::store::catalog::Activation;

/// How a deploy is checked.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeployOptions {
    /// Activate even if the new version fails on existing logs.
    pub force: bool,
}

/// What a deploy would do, found without storing or activating anything
/// (a dry run).
#[derive(Debug, Clone)]
pub struct Trial {
    /// The version the bytes are (their sha256).
    pub version: Version,
    /// Their size in bytes.
    pub size: u64,
    /// How many existing logs bound to the name it replayed.
    pub replayed_logs: usize,
    /// Logs it failed on (only when forced; unforced, a failure is the
    /// same [`DeployError`] a deploy would return).
    pub failed_logs: Vec<LogId>,
}

/// What a deploy did.
#[derive(Debug, Clone)]
pub struct Deployment {
    /// The stored and activated version.
    pub deployed: Deployed,
    /// How many existing logs the new version replayed before activation.
    pub replayed_logs: usize,
    /// Logs it failed on (only when forced).
    pub failed_logs: Vec<LogId>,
}

/// A deploy refused because the new version fails on existing logs.
#[derive(Debug, Clone, thiserror::Error)]
#[error("version {version} fails on {} of {replayed_logs} existing logs", failures.len())]
pub struct DeployError {
    /// The refused version.
    pub version: Version,
    /// How many logs were replayed.
    pub replayed_logs: usize,
    /// Each failing log and how the reducer failed on it.
    pub failures: Vec<(LogId, ReducerError)>,
}

impl LogManager {
    /// Validates `bytes` as a version of `name`, replays a sample of the
    /// name's logs with it, then stores and activates it. Invalid bytes, or
    /// a version failing on a replayed log (unless `options.force`), change
    /// nothing: the active version keeps serving.
    pub async fn deploy(
        &self,
        name: &str,
        bytes: Vec<u8>,
        options: DeployOptions,
    ) -> Result<Deployment, LogError> {
        let (candidate, replayed_logs, failed_logs) = self.guard(name, &bytes, options).await?;
        let deployed = self.registry.install(name, &bytes, candidate).await?;
        Ok(Deployment {
            deployed,
            replayed_logs,
            failed_logs,
        })
    }

    /// What [`LogManager::deploy`] would do with the same arguments (the
    /// same validation, the same replay of the name's logs, the same
    /// errors), without storing or activating anything.
    pub async fn try_deploy(
        &self,
        name: &str,
        bytes: &[u8],
        options: DeployOptions,
    ) -> Result<Trial, LogError> {
        let (candidate, replayed_logs, failed_logs) = self.guard(name, bytes, options).await?;
        Ok(Trial {
            version: candidate.version(),
            size: bytes.len() as u64,
            replayed_logs,
            failed_logs,
        })
    }

    /// Validates `bytes` as a version of `name` and replays a sample of the
    /// name's logs with it: the candidate, how many logs it replayed and,
    /// when forced, those it failed on.
    async fn guard(
        &self,
        name: &str,
        bytes: &[u8],
        options: DeployOptions,
    ) -> Result<(Reducer, usize, Vec<LogId>), LogError> {
        let candidate = self.registry.prepare(name, bytes).await?;
        let unchanged = self
            .registry
            .active(name)
            .is_some_and(|active| active.version() == candidate.version());
        let (replayed_logs, failures) = if unchanged {
            (0, Vec::new())
        } else {
            self.replay_sample(name, &candidate).await?
        };
        if !failures.is_empty() && !options.force {
            return Err(DeployError {
                version: candidate.version(),
                replayed_logs,
                failures,
            }
            .into());
        }
        let failed_logs = failures.into_iter().map(|(id, _)| id).collect();
        Ok((candidate, replayed_logs, failed_logs))
    }

    /// Folds the most recently appended logs of `name` from the start with
    /// `candidate`, until the sample or the time budget is used up.
    async fn replay_sample(
        &self,
        name: &str,
        candidate: &Reducer,
    ) -> Result<(usize, Vec<(LogId, ReducerError)>), LogError> {
        let sample = self
            .store
            .recent_logs(name, self.options.deploy_sample_logs)
            .await?;
        let budget_ends = Instant::now() + self.options.deploy_replay_budget;
        let mut replayed = 0;
        let mut failures = Vec::new();
        for log_id in sample {
            if Instant::now() >= budget_ends {
                tracing::info!(reducer = name, replayed, "deploy replay budget used up");
                break;
            }
            let key = CacheKey {
                reducer: name.to_owned(),
                version: candidate.version(),
                log_id,
            };
            let outcome = match self
                .fold_to_end(candidate, &key, log_id, Start::Empty)
                .await
            {
                Ok(at_end) => {
                    let fold = at_end.fold;
                    self.blocking(move || fold.finish()).await.map(|_| ())
                }
                Err(error) => Err(error),
            };
            replayed += 1;
            match outcome {
                Ok(()) => {}
                Err(LogError::Reducer(error)) => failures.push((log_id, error)),
                Err(other) => return Err(other),
            }
        }
        Ok((replayed, failures))
    }

    /// Makes a stored version of `name` active again (a rollback).
    pub async fn activate(&self, name: &str, version: Version) -> Result<Activation, LogError> {
        Ok(self.registry.activate(name, version).await?)
    }

    /// Every reducer name with an active version.
    pub async fn reducers(&self) -> Result<Vec<ReducerInfo>, LogError> {
        Ok(self.registry.list().await?)
    }

    /// One reducer name's versions and active version.
    pub async fn reducer(&self, name: &str) -> Result<ReducerInfo, LogError> {
        Ok(self.registry.describe(name).await?)
    }
}
