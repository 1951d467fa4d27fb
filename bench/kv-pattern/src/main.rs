//! The disk store's write pattern per job, three durable commits (accept,
//! start, finish), grouped G jobs per commit, each commit fsynced: redb
//! against fjall. Arguments: jobs (60000), jobs per commit (32).
use std::time::Instant;

const RECORDS: redb::TableDefinition<&[u8; 16], &[u8]> = redb::TableDefinition::new("jobs");
const REQUESTS: redb::TableDefinition<(u64, &[u8; 16]), &[u8]> =
    redb::TableDefinition::new("requests");
const EXPIRY: redb::TableDefinition<(u64, &[u8; 16]), u8> = redb::TableDefinition::new("expiry");

/// A job's expiry entry lies this far past its creation.
const RESULT_TTL_MS: u64 = 3_600_000;

/// What one commit does to each job of its group.
#[derive(Clone, Copy)]
enum Phase {
    /// Its record, and its request body keyed by creation time.
    Accept,
    /// Its record rewritten.
    Start,
    /// Its record with a result, its body removed, an expiry entry.
    Finish,
}

/// The jobs (random ids, as the gateway's are) and the bytes written for
/// each.
struct Workload {
    ids: Vec<[u8; 16]>,
    record: Vec<u8>,
    body: Vec<u8>,
    finished: Vec<u8>,
}

impl Workload {
    fn new(n: usize) -> Workload {
        let record = vec![7u8; 300];
        let body = vec![9u8; 1024];
        Workload {
            ids: (0..n).map(|_| fastrand::u128(..).to_le_bytes()).collect(),
            finished: [record.as_slice(), body.as_slice()].concat(),
            record,
            body,
        }
    }

    /// Runs `commit` for each group of `g` jobs in each phase, with each
    /// job's creation time and id; jobs per second.
    fn replay(&self, g: usize, mut commit: impl FnMut(Phase, &[(u64, &[u8; 16])])) -> f64 {
        let start = Instant::now();
        for (n, chunk) in self.ids.chunks(g).enumerate() {
            let jobs: Vec<(u64, &[u8; 16])> = chunk
                .iter()
                .enumerate()
                .map(|(i, id)| ((n * g + i) as u64, id))
                .collect();
            for phase in [Phase::Accept, Phase::Start, Phase::Finish] {
                commit(phase, &jobs);
            }
        }
        self.ids.len() as f64 / start.elapsed().as_secs_f64()
    }
}

fn redb_run(dir: &str, w: &Workload, g: usize) -> f64 {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let db = redb::Database::create(format!("{dir}/db")).unwrap();
    w.replay(g, |phase, jobs| {
        let txn = db.begin_write().unwrap();
        {
            let mut records = txn.open_table(RECORDS).unwrap();
            let mut requests = txn.open_table(REQUESTS).unwrap();
            let mut expiry = txn.open_table(EXPIRY).unwrap();
            for &(t, id) in jobs {
                match phase {
                    Phase::Accept => {
                        records.insert(id, &w.record[..]).unwrap();
                        requests.insert((t, id), &w.body[..]).unwrap();
                    }
                    Phase::Start => drop(records.insert(id, &w.record[..]).unwrap()),
                    Phase::Finish => {
                        records.insert(id, &w.finished[..]).unwrap();
                        requests.remove((t, id)).unwrap();
                        expiry.insert((t + RESULT_TTL_MS, id), 1).unwrap();
                    }
                }
            }
        }
        txn.commit().unwrap();
    })
}

fn fjall_run(dir: &str, w: &Workload, g: usize) -> f64 {
    let _ = std::fs::remove_dir_all(dir);
    let db = fjall::Database::builder(dir).open().unwrap();
    let keyspace = |name| {
        db.keyspace(name, fjall::KeyspaceCreateOptions::default)
            .unwrap()
    };
    let (records, requests, expiry) = (keyspace("jobs"), keyspace("requests"), keyspace("expiry"));
    // A time, then an id: the order of redb's (u64, id) keys.
    let timed = |t: u64, id: &[u8; 16]| [&t.to_be_bytes()[..], &id[..]].concat();
    w.replay(g, |phase, jobs| {
        let mut batch = db.batch();
        for &(t, id) in jobs {
            match phase {
                Phase::Accept => {
                    batch.insert(&records, &id[..], &w.record[..]);
                    batch.insert(&requests, timed(t, id), &w.body[..]);
                }
                Phase::Start => batch.insert(&records, &id[..], &w.record[..]),
                Phase::Finish => {
                    batch.insert(&records, &id[..], &w.finished[..]);
                    batch.remove(&requests, timed(t, id));
                    batch.insert(&expiry, timed(t + RESULT_TTL_MS, id), &[1u8][..]);
                }
            }
        }
        batch.commit().unwrap();
        db.persist(fjall::PersistMode::SyncData).unwrap();
    })
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(60_000, |s| s.parse().unwrap());
    let g: usize = std::env::args().nth(2).map_or(32, |s| s.parse().unwrap());
    let dir = std::env::temp_dir().join("kv-pattern");
    let (redb_dir, fjall_dir) = (dir.join("redb"), dir.join("fjall"));
    let workload = Workload::new(n);
    for round in 0..2 {
        let r = redb_run(redb_dir.to_str().unwrap(), &workload, g);
        let f = fjall_run(fjall_dir.to_str().unwrap(), &workload, g);
        println!(
            "round {round}: jobs/s redb {r:.0}  fjall {f:.0}  ratio {:.2}",
            f / r
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
