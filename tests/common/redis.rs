//! A real Redis for the tests that share a store: `redis-server` started
//! on a free port, stopped and started again at will; or a real Redis
//! Cluster of six of them (three masters, each with a replica).

use std::path::PathBuf;
use std::process::Stdio;

use redis::FromRedisValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use super::{poll_until, within};

/// A `redis-server` of the test's own on a free port, persisting to a
/// directory of its own (append-only, fsync always), so a restart keeps
/// what it had.
pub(crate) struct Redis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    cluster: bool,
}

impl Redis {
    pub(crate) async fn start() -> Redis {
        Redis::start_as(false).await
    }

    async fn start_as(cluster: bool) -> Redis {
        let port = if cluster {
            bus_port_pair()
        } else {
            super::steady_port()
        };
        let dir = std::env::temp_dir().join(format!("asyncgate-redis-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Redis {
            port,
            dir,
            child: None,
            cluster,
        };
        redis.up().await;
        redis
    }

    pub(crate) async fn up(&mut self) {
        // A node's cluster bus listens on its port + 10000.
        let cluster: &[&str] = if self.cluster {
            &["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"]
        } else {
            &[]
        };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", self.dir.to_str().unwrap()])
            .args(cluster)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it)");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        poll_until(10, "redis-server to answer PING", async || {
            let mut s = tokio::net::TcpStream::connect(&addr).await.ok()?;
            let mut buf = [0u8; 7];
            s.write_all(b"PING\r\n").await.ok()?;
            s.read_exact(&mut buf).await.ok()?;
            (&buf == b"+PONG\r\n").then_some(())
        })
        .await;
    }

    /// Stops it the way an operator would (SIGTERM), keeping its data.
    pub(crate) async fn down(&mut self) {
        let mut child = self.child.take().unwrap();
        let pid = child.id().unwrap().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        within(10, "redis-server to stop", child.wait())
            .await
            .unwrap();
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Ends it as a crash would.
    pub(crate) async fn crash(&mut self) {
        let mut child = self.child.take().unwrap();
        child.start_kill().unwrap();
        within(10, "redis-server to die", child.wait())
            .await
            .unwrap();
    }

    pub(crate) async fn conn(&self) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(self.url()).unwrap();
        within(
            10,
            "a Redis connection",
            client.get_multiplexed_async_connection(),
        )
        .await
        .unwrap()
    }

    /// Waits until this master's replica has everything it was written.
    async fn replicated(&self) {
        poll_until(30, "the replica to catch up with its master", async || {
            let mut conn = self.conn().await;
            let mut cmd = redis::cmd("INFO");
            cmd.arg("replication");
            let info: String = cmd.query_async(&mut conn).await.ok()?;
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_owned())
            };
            let written = field("master_repl_offset:")?;
            let copied = field("slave0:")?;
            copied
                .split(',')
                .any(|kv| kv == format!("offset={written}"))
                .then_some(())
        })
        .await;
    }

    /// `CLUSTER` `sub`'s answer on this node, if it answers.
    async fn cluster(&self, sub: &str, arg: Option<&str>) -> Option<redis::Value> {
        let mut conn = self.conn().await;
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg(sub).arg(arg);
        within(5, "a CLUSTER command", cmd.query_async(&mut conn))
            .await
            .ok()
    }
}

/// A port for a cluster node, free when asked, whose cluster bus (10000
/// above it) is free too. Both are taken below Linux's ephemeral range
/// (32768 and up), so that the bus is at most 65535 (redis-server refuses
/// to start otherwise) and no socket another test opens on port 0 takes
/// either of them meanwhile.
fn bus_port_pair() -> u16 {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    for _ in 0..1000 {
        let port = 20_000 + (uuid::Uuid::new_v4().as_u128() % 2_768) as u16;
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free pair of ports (N, N + 10000) for a cluster node in 20000-32767");
}

/// A Redis Cluster on loopback: three masters, each with a replica, so a
/// master killed is failed over to its replica within seconds (a node
/// timeout of one second).
pub(crate) struct Cluster {
    nodes: Vec<Redis>,
}

impl Cluster {
    pub(crate) async fn start() -> Cluster {
        let mut nodes = Vec::new();
        for _ in 0..6 {
            nodes.push(Redis::start_as(true).await);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .status();
        let created = within(60, "redis-cli --cluster create", created)
            .await
            .unwrap();
        assert!(created.success(), "redis-cli --cluster create failed");
        let cluster = Cluster { nodes };
        cluster.settled(&[]).await;
        cluster
    }

    /// The seed nodes, every one of them, as a gateway's `url`.
    pub(crate) fn url(&self) -> String {
        let urls: Vec<String> = self.nodes.iter().map(Redis::url).collect();
        urls.join(",")
    }

    /// Waits until every live node but those in `dead` sees all slots
    /// served.
    async fn settled(&self, dead: &[u16]) {
        for node in self.nodes.iter().filter(|n| !dead.contains(&n.port)) {
            poll_until(60, "the cluster to cover every slot", async || {
                let info = node.cluster("INFO", None).await?;
                let info = String::from_redis_value(info).ok()?;
                info.contains("cluster_state:ok").then_some(())
            })
            .await;
        }
    }

    /// The port of the master now serving the keys tagged `{tag}`, as a
    /// node not in `dead` sees it.
    async fn master_of(&self, tag: &str, dead: &[u16]) -> Option<u16> {
        let live = self.nodes.iter().find(|n| !dead.contains(&n.port))?;
        let slot = live
            .cluster("KEYSLOT", Some(&format!("{{{tag}}}")))
            .await
            .and_then(|v| i64::from_redis_value(v).ok())?;
        let nodes = String::from_redis_value(live.cluster("NODES", None).await?).ok()?;
        // `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slots…>`
        nodes
            .lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split(' ').collect();
                let master = fields[2].contains("master") && !fields[2].contains("fail");
                let serves = fields[8..].iter().any(|range| {
                    let (from, to) = range.split_once('-').unwrap_or((range, range));
                    matches!((from.parse::<i64>(), to.parse::<i64>()), (Ok(f), Ok(t)) if (f..=t).contains(&slot))
                });
                let port = fields[1].split(['@', ':']).nth(1)?.parse().ok()?;
                (master && serves).then_some(port)
            })
    }

    /// Kills (`kill -9`) the master serving the keys tagged `{tag}` and
    /// waits until its replica has taken its place: the port killed.
    pub(crate) async fn fail_over(&mut self, tag: &str) -> u16 {
        let port = self.master_of(tag, &[]).await.unwrap();
        let node = self.nodes.iter_mut().find(|n| n.port == port).unwrap();
        // Replication is asynchronous: a write not yet copied when its
        // master dies is lost, which is Redis's promise, not the gateway's.
        node.replicated().await;
        node.crash().await;
        poll_until(
            60,
            "a replica to take the killed master's place",
            async || {
                self.master_of(tag, &[port])
                    .await
                    .filter(|&p| p != port)
                    .map(drop)
            },
        )
        .await;
        self.settled(&[port]).await;
        port
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A shared store as a gateway's `[store]` section names it.
pub(crate) trait Shared {
    fn store_keys(&self) -> String;
}

impl Shared for Redis {
    fn store_keys(&self) -> String {
        format!("kind = \"redis\"\nurl = \"{}\"", self.url())
    }
}

impl Shared for Cluster {
    fn store_keys(&self) -> String {
        format!("kind = \"redis\"\ncluster = true\nurl = \"{}\"", self.url())
    }
}
