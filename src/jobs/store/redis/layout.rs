//! Which keys a job's scripts touch: on one Redis, every key under the
//! prefix; on a Redis Cluster, where a script may touch the keys of one
//! hash slot only, each upstream's keys under a hash tag of its own.
//!
//! An upstream is the unit because its scripts already meet there: a job
//! is queued in its upstream's stream, the stream's entries name jobs, and
//! the upstream's concurrency bound is the stream's pending count, which
//! must stay exact across replicas. So `P:{t}:job:{id}`, `P:{t}:work:{up}`,
//! `P:{t}:bytes` and the rest, where `t` is four hex digits hashed from the
//! upstream's name, and every job id of that upstream starts with the same
//! four digits, so a job's keys are found from its id alone, with no
//! lookup first. The cluster's load spreads by upstream; one upstream's
//! jobs live on one master.

use crate::jobs::id::JobId;

#[derive(Debug, Clone)]
pub(super) struct Layout {
    prefix: String,
    cluster: bool,
}

impl Layout {
    pub(super) fn new(prefix: &str, cluster: bool) -> Layout {
        Layout {
            prefix: prefix.to_owned(),
            cluster,
        }
    }

    pub(super) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(super) fn cluster(&self) -> bool {
        self.cluster
    }

    /// The key prefix of the scripts on `id`'s keys (a script's `KEYS[1]`).
    pub(super) fn of_job(&self, id: JobId) -> String {
        self.space(id.tag())
    }

    /// The key prefix of the scripts on `upstream`'s queue.
    pub(super) fn of_upstream(&self, upstream: &str) -> String {
        self.space(tag(upstream))
    }

    pub(super) fn new_id(&self, upstream: &str) -> JobId {
        if self.cluster {
            JobId::random_tagged(tag(upstream))
        } else {
            JobId::random()
        }
    }

    /// On a cluster, the set of the spaces jobs were created in, for the
    /// scripts that look at all jobs (the sweep, deliveries taken over).
    pub(super) fn spaces_key(&self) -> String {
        format!("{}:spaces", self.prefix)
    }

    fn space(&self, tag: u16) -> String {
        if self.cluster {
            format!("{}:{{{tag:04x}}}", self.prefix)
        } else {
            self.prefix.clone()
        }
    }
}

/// An upstream's tag: FNV-1a of its name, folded to 16 bits. It names keys
/// that outlive the process, so it must never change.
fn tag(upstream: &str) -> u16 {
    let hash = upstream.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    (hash >> 16) as u16 ^ hash as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_redis_keeps_every_key_under_the_prefix() {
        let layout = Layout::new("ag", false);
        assert_eq!(layout.of_job(JobId::random()), "ag");
        assert_eq!(layout.of_upstream("app"), "ag");
    }

    #[test]
    fn on_a_cluster_a_job_s_keys_share_its_upstream_s_hash_tag() {
        let layout = Layout::new("ag", true);
        let space = layout.of_upstream("app");
        assert!(space.starts_with("ag:{") && space.ends_with('}'), "{space}");
        let id = layout.new_id("app");
        assert_eq!(layout.of_job(id), space);
        assert!(space.contains(&id.to_string()[..4]));
        assert_ne!(layout.of_upstream("reports"), space);
    }

    #[test]
    fn an_upstream_s_tag_never_changes() {
        // Stored keys and job ids carry it: a new hash would orphan them.
        assert_eq!(Layout::new("ag", true).of_upstream("app"), "ag:{9c46}");
    }
}
