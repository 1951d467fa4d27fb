//! The disk store's write pattern per job, three durable commits (accept,
//! start, finish), grouped G jobs per commit, each commit fsynced: redb
//! against fjall. Arguments: jobs (60000), jobs per commit (32).
use std::time::Instant;

const RECORDS: redb::TableDefinition<&[u8; 16], &[u8]> = redb::TableDefinition::new("jobs");
const REQUESTS: redb::TableDefinition<(u64, &[u8; 16]), &[u8]> =
    redb::TableDefinition::new("requests");
const EXPIRY: redb::TableDefinition<(u64, &[u8; 16]), u8> = redb::TableDefinition::new("expiry");

fn ids(n: usize) -> Vec<[u8; 16]> {
    (0..n).map(|_| fastrand::u128(..).to_le_bytes()).collect()
}

fn redb_run(dir: &str, n: usize, g: usize) -> f64 {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    let db = redb::Database::create(format!("{dir}/db")).unwrap();
    let ids = ids(n);
    let rec = vec![7u8; 300];
    let body = vec![9u8; 1024];
    let start = Instant::now();
    for (chunk_no, chunk) in ids.chunks(g).enumerate() {
        let t0 = chunk_no as u64 * g as u64;
        for phase in 0..3 {
            let txn = db.begin_write().unwrap();
            {
                let mut jobs = txn.open_table(RECORDS).unwrap();
                let mut reqs = txn.open_table(REQUESTS).unwrap();
                let mut exp = txn.open_table(EXPIRY).unwrap();
                for (i, id) in chunk.iter().enumerate() {
                    let t = t0 + i as u64;
                    match phase {
                        0 => {
                            jobs.insert(id, &rec[..]).unwrap();
                            reqs.insert((t, id), &body[..]).unwrap();
                        }
                        1 => {
                            jobs.insert(id, &rec[..]).unwrap();
                        }
                        _ => {
                            let mut r = rec.clone();
                            r.extend_from_slice(&body);
                            jobs.insert(id, &r[..]).unwrap();
                            reqs.remove((t, id)).unwrap();
                            exp.insert((t + 3_600_000, id), 1).unwrap();
                        }
                    }
                }
            }
            txn.commit().unwrap();
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn fjall_run(dir: &str, n: usize, g: usize) -> f64 {
    let _ = std::fs::remove_dir_all(dir);
    let db = fjall::Database::builder(dir).open().unwrap();
    let jobs = db
        .keyspace("jobs", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    let reqs = db
        .keyspace("requests", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    let exp = db
        .keyspace("expiry", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    let ids = ids(n);
    let rec = vec![7u8; 300];
    let body = vec![9u8; 1024];
    let start = Instant::now();
    for (chunk_no, chunk) in ids.chunks(g).enumerate() {
        let t0 = chunk_no as u64 * g as u64;
        for phase in 0..3 {
            let mut b = db.batch();
            for (i, id) in chunk.iter().enumerate() {
                let t = t0 + i as u64;
                let mut tk = t.to_be_bytes().to_vec();
                tk.extend_from_slice(id);
                match phase {
                    0 => {
                        b.insert(&jobs, &id[..], &rec[..]);
                        b.insert(&reqs, &tk[..], &body[..]);
                    }
                    1 => b.insert(&jobs, &id[..], &rec[..]),
                    _ => {
                        let mut r = rec.clone();
                        r.extend_from_slice(&body);
                        b.insert(&jobs, &id[..], &r[..]);
                        b.remove(&reqs, &tk[..]);
                        let mut ek = (t + 3_600_000).to_be_bytes().to_vec();
                        ek.extend_from_slice(id);
                        b.insert(&exp, &ek[..], &[1u8][..]);
                    }
                }
            }
            b.commit().unwrap();
            db.persist(fjall::PersistMode::SyncData).unwrap();
        }
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(60_000, |s| s.parse().unwrap());
    let g: usize = std::env::args().nth(2).map_or(32, |s| s.parse().unwrap());
    let dir = std::env::temp_dir().join("kv-pattern");
    let (redb_dir, fjall_dir) = (dir.join("redb"), dir.join("fjall"));
    for round in 0..2 {
        let r = redb_run(redb_dir.to_str().unwrap(), n, g);
        let f = fjall_run(fjall_dir.to_str().unwrap(), n, g);
        println!(
            "round {round}: jobs/s redb {r:.0}  fjall {f:.0}  ratio {:.2}",
            f / r
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
