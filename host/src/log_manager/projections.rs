//! Projections: a reducer folding every feed event that passes a filter
//! into one aggregate, in position order, incrementally from its saved
//! state.
//!
//! A read folds what was committed since the state of the reducer's active
//! version, for at most the projection budget, saves it and serves it. When
//! a new version is activated, its state starts from the beginning of the
//! feed: it is built in the background (one build per process and
//! version), and until it has once reached the end of the feed, reads keep
//! serving the state of the version that last did (blue/green). States live
//! in the database, so every process serves and advances the same ones.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::subscriptions::is_plain_name;
use super::{LogError, LogManager};
use crate::Version;
use crate::clock::now_micros;
use crate::runtime::{EventBatch, Reducer};
use crate::store::{FeedFilter, Projection, ProjectionState, StoreError};

/// Longest projection name.
const NAME_MAX: usize = 128;

/// Why a projection operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    /// Not 1 to 128 characters of `[A-Za-z0-9._-]`.
    #[error("a projection name is 1 to {NAME_MAX} characters of A-Z, a-z, 0-9, '.', '_' and '-'")]
    InvalidName,
    /// There is no projection of this name.
    #[error("no projection named {0:?}")]
    NotFound(String),
}

/// A projection as read: the state served and how its build stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionRead {
    /// Its definition.
    pub projection: Projection,
    /// The state served: the active version's once it has reached the end
    /// of the feed, until then the last version's that had.
    pub state: ProjectionState,
    /// The active version of the projection's reducer.
    pub active_version: Version,
    /// How far the active version's state is, when it is not the one
    /// served (it is being built).
    pub building: Option<u64>,
}

/// The (projection, version) builds running in this process.
pub(super) type Builds = Arc<Mutex<HashSet<(String, Version)>>>;

impl LogManager {
    /// Creates the projection `name` of `reducer` over the events passing
    /// `filter`, or redefines it (dropping its states if anything changed);
    /// whether it was created. The reducer must be deployed.
    pub async fn put_projection(
        &self,
        name: &str,
        reducer: &str,
        filter: &FeedFilter,
    ) -> Result<(Projection, bool), LogError> {
        check_name(name)?;
        self.registry.resolve_active(reducer).await?;
        Ok(self
            .store
            .put_projection(name, reducer, filter, now_micros())
            .await?)
    }

    /// Every projection's definition, by name.
    pub async fn projections(&self) -> Result<Vec<Projection>, LogError> {
        Ok(self.store.projections().await?)
    }

    /// Deletes the projection `name` and its states.
    pub async fn delete_projection(&self, name: &str) -> Result<(), LogError> {
        check_name(name)?;
        if self.store.delete_projection(name).await? {
            Ok(())
        } else {
            Err(ProjectionError::NotFound(name.into()).into())
        }
    }

    /// The projection `name`, brought up to date as far as the projection
    /// budget allows (see the module's description).
    pub async fn projection(&self, name: &str) -> Result<ProjectionRead, LogError> {
        check_name(name)?;
        let projection = self
            .store
            .projection(name)
            .await?
            .ok_or_else(|| ProjectionError::NotFound(name.into()))?;
        let active = self.registry.resolve_active(&projection.reducer).await?;
        let active_version = active.version();
        let states = self.store.projection_states(name).await?;
        let own = states.iter().find(|s| s.version == active_version).cloned();
        let previous = states
            .into_iter()
            .filter(|s| s.version != active_version && s.caught_up)
            .max_by_key(|s| s.updated_at);
        match previous {
            Some(previous) if !own.as_ref().is_some_and(|s| s.caught_up) => {
                self.build_in_background(projection.clone(), active);
                Ok(ProjectionRead {
                    building: Some(own.map_or(0, |s| s.position)),
                    projection,
                    state: previous,
                    active_version,
                })
            }
            _ => {
                let deadline = Instant::now() + self.options.projection_budget;
                let (state, at_end) = self
                    .advance(&projection, &active, own, Some(deadline))
                    .await?;
                if !at_end {
                    self.build_in_background(projection.clone(), active);
                }
                Ok(ProjectionRead {
                    projection,
                    state,
                    active_version,
                    building: None,
                })
            }
        }
    }

    /// Builds `reducer`'s state of `projection` to the end of the feed in
    /// the background, unless this process is already building it.
    fn build_in_background(&self, projection: Projection, reducer: Reducer) {
        let build = (projection.name.clone(), reducer.version());
        if !self
            .builds
            .lock()
            .expect("builds lock")
            .insert(build.clone())
        {
            return;
        }
        let manager = self.clone();
        tokio::spawn(async move {
            let built = async {
                let states = manager.store.projection_states(&projection.name).await?;
                let own = states.into_iter().find(|s| s.version == reducer.version());
                manager.advance(&projection, &reducer, own, None).await
            };
            if let Err(error) = built.await {
                tracing::warn!(projection = projection.name, %error, "building a projection failed");
            }
            manager.builds.lock().expect("builds lock").remove(&build);
        });
    }

    /// Folds the events after `from` (or from the start) with `reducer`
    /// until the end of the feed or `deadline` (one page at least), saves
    /// the state and returns it, and whether it reached the end.
    async fn advance(
        &self,
        projection: &Projection,
        reducer: &Reducer,
        from: Option<ProjectionState>,
        deadline: Option<Instant>,
    ) -> Result<(ProjectionState, bool), LogError> {
        let _turn = self.admission.enter(&projection.reducer).await?;
        let (mut position, mut events, mut caught_up) = from
            .as_ref()
            .map_or((0, 0, false), |s| (s.position, s.events, s.caught_up));
        let mut fold = Some(match &from {
            Some(state) => {
                let (reducer, json) = (reducer.clone(), state.aggregate.clone());
                self.blocking(move || reducer.resume(json.as_bytes()))
                    .await?
            }
            None => {
                let reducer = reducer.clone();
                self.blocking(move || reducer.start()).await?
            }
        });
        let (mut moved, mut at_end) = (false, false);
        loop {
            let page = self
                .store
                .feed(
                    position,
                    &projection.filter,
                    self.options.batch_size,
                    self.options.batch_bytes,
                )
                .await?;
            moved |= page.through > position;
            position = page.through;
            if !page.events.is_empty() {
                // Numbered within the projection: the reducer sees one
                // gap-free sequence of events, whatever logs they are from.
                let mut batch = EventBatch::with_capacity(page.events.len(), 0);
                for (index, event) in (events..).zip(&page.events) {
                    batch
                        .push(
                            index,
                            event.event.recorded_at,
                            event.event.payload.as_bytes(),
                        )
                        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                }
                events += page.events.len() as u64;
                let mut taken = fold.take().expect("fold present between batches");
                let (returned, applied) = self
                    .registry
                    .runtime()
                    .run(move || {
                        let applied = taken.apply(&batch);
                        (taken, applied)
                    })
                    .await;
                fold = Some(returned);
                applied?;
            }
            if page.through >= page.head {
                moved |= !caught_up;
                caught_up = true;
                at_end = true;
                break;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
        }
        let done = fold.take().expect("fold present at the end");
        let folded = match (&from, moved) {
            // Nothing new: the saved aggregate stands.
            (Some(state), false) => state.aggregate.clone(),
            _ => self.blocking(move || done.finish()).await?.json,
        };
        let state = ProjectionState {
            version: reducer.version(),
            position,
            events,
            aggregate: folded,
            caught_up,
            updated_at: now_micros(),
        };
        if moved || from.is_none() {
            self.store
                .save_projection_state(&projection.name, projection.updated_at, &state)
                .await?;
        }
        metrics::gauge!("eventlogs_projection_position", "projection" => projection.name.clone())
            .set(position as f64);
        Ok((state, at_end))
    }
}

fn check_name(name: &str) -> Result<(), ProjectionError> {
    if is_plain_name(name, NAME_MAX) {
        Ok(())
    } else {
        Err(ProjectionError::InvalidName)
    }
}
