//! The jobs this process saw last, for the operator's dashboard: the most
//! recent few hundred as they stand now, and the last failures kept apart
//! so a burst of successes does not push them out of sight.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use super::id::{IdMap, JobId};
use super::model::{Job, JobStatus};
use crate::sync::lock;

/// How many jobs are kept, and how many failed ones besides.
const KEPT: usize = 200;
const FAILED_KEPT: usize = 50;

#[derive(Default)]
pub(super) struct Recent {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Oldest first; every id here is in `jobs`.
    order: VecDeque<JobId>,
    jobs: IdMap<Job>,
    /// Oldest first.
    failed: VecDeque<Job>,
}

impl Recent {
    /// Records a job as it stands now, replacing what was kept of it.
    pub(super) fn saw(&self, job: &Job) {
        let mut inner = lock(&self.inner);
        if job.status == JobStatus::Failed {
            if inner.failed.len() == FAILED_KEPT {
                inner.failed.pop_front();
            }
            inner.failed.push_back(job.clone());
        }
        if inner.jobs.insert(job.id, job.clone()).is_none() {
            inner.order.push_back(job.id);
            if inner.order.len() > KEPT {
                if let Some(oldest) = inner.order.pop_front() {
                    inner.jobs.remove(&oldest);
                }
            }
        }
    }

    /// A kept job began running.
    pub(super) fn began(&self, id: JobId, at: SystemTime) {
        if let Some(job) = lock(&self.inner).jobs.get_mut(&id) {
            job.begin(at);
        }
    }

    /// Newest first, at most `limit`, of those `keep` accepts: the recent
    /// jobs, and the failures kept apart that are no longer among them.
    pub(super) fn list(&self, keep: impl Fn(&Job) -> bool, limit: usize) -> Vec<Job> {
        let inner = lock(&self.inner);
        let recent = inner.order.iter().rev().filter_map(|id| inner.jobs.get(id));
        let older_failures = inner
            .failed
            .iter()
            .rev()
            .filter(|j| !inner.jobs.contains_key(&j.id));
        recent
            .chain(older_failures)
            .filter(|j| keep(j))
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::model::{Failure, Outcome};

    fn job() -> Job {
        Job::queued(JobId::random(), "r".into(), http::Method::POST)
    }

    #[test]
    fn keeps_the_newest_and_updates_in_place() {
        let recent = Recent::default();
        let jobs: Vec<Job> = (0..KEPT + 10).map(|_| job()).collect();
        for j in &jobs {
            recent.saw(j);
        }
        let listed = recent.list(|_| true, usize::MAX);
        assert_eq!(listed.len(), KEPT);
        assert_eq!(listed[0].id, jobs.last().unwrap().id);
        let mut last = jobs.last().unwrap().clone();
        last.finish(&Outcome::failed(Failure::Timeout));
        recent.saw(&last);
        let listed = recent.list(|_| true, usize::MAX);
        assert_eq!(listed.len(), KEPT, "updated, not added");
        assert_eq!(listed[0].status, JobStatus::Failed);
    }

    #[test]
    fn failures_outlive_a_burst_of_successes() {
        let recent = Recent::default();
        let mut failed = job();
        failed.finish(&Outcome::failed(Failure::Reset));
        recent.saw(&failed);
        for _ in 0..KEPT * 2 {
            recent.saw(&job());
        }
        let failures = recent.list(|j| j.status == JobStatus::Failed, 10);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].id, failed.id);
    }
}
