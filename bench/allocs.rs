//! Heap allocations per request in the gateway: the gateway runs in this
//! process under a counting allocator, a client on a thread of its own
//! sends requests over loopback without allocating, and the backend is
//! `bench-backend` in another process, so what is counted is the gateway's
//! work. Counts do not drift with the machine the way timings do: an A/B of
//! two builds needs one run of each.
//!
//!   cargo run --release --example bench-backend -- 127.0.0.1:18081 &
//!   cargo run --release --example bench-allocs -- 127.0.0.1:18081

use std::alloc::System;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use asyncgate::{Config, Gateway};
use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Requests per measurement.
const N: u64 = 20_000;

fn main() {
    let backend = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".into());
    let config = Config::parse(
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
             [admin]\nenabled = false\n\
             [store]\nkind = \"memory\"\n\
             [upstreams.backend]\nurl = \"http://{backend}\"\nmax_concurrency = 64\nmax_queue = 100000\n\
             [[routes]]\nname = \"jobs\"\nmethods = [\"POST\"]\npath = \"/jobs/{{*rest}}\"\n\
             upstream = \"backend\"\nmode = \"async\"\n\
             [default]\nupstream = \"backend\"\n"
        ),
        "bench-allocs.toml".as_ref(),
    )
    .expect("a valid config");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let gateway = runtime
        .block_on(Gateway::bind(config))
        .expect("the gateway binds");
    let addr = gateway.local_addr();
    let client = std::thread::spawn(move || measure(addr, &backend));
    runtime.block_on(gateway.run(async {
        while !client.is_finished() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }));
}

/// Runs every measurement and prints one row each.
fn measure(gateway: SocketAddr, backend: &str) {
    let mut c = Client::connect(gateway);
    let kib = vec![b'x'; 1024];
    let get = b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n".to_vec();
    let post = request("POST", "/echo", &kib);
    let submit = request("POST", "/jobs/x", &kib);
    println!("| request | allocations | bytes (fresh allocations) |");
    println!("|---|---|---|");
    row("passthrough GET", &mut c, &get);
    row("passthrough POST 1 KiB", &mut c, &post);
    let before = backend_posts(backend);
    let (n, bytes) = counted(|| {
        for _ in 0..N {
            c.exchange(&submit);
        }
        // The jobs' own work, up to their stored results.
        let deadline = Instant::now() + Duration::from_secs(60);
        while backend_posts(backend) < before + N && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
    });
    print_row("job: submit (202), run, store the result", n, bytes);
    // One job more, whose status and result are then polled.
    let location = c.header(&submit, "location");
    let path = location
        .find("/_jobs/")
        .map_or(location.as_str(), |at| &location[at..]);
    let status = format!("GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n").into_bytes();
    let result = format!("GET {path}/result HTTP/1.1\r\nhost: bench\r\n\r\n").into_bytes();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !c.body_of(&status).contains("succeeded") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    row("poll: GET status of a finished job", &mut c, &status);
    row("poll: GET result of a finished job", &mut c, &result);
}

fn row(name: &str, c: &mut Client, request: &[u8]) {
    // Warm: pools, caches and buffers reach their working size first.
    for _ in 0..1000 {
        c.exchange(request);
    }
    let (n, bytes) = counted(|| {
        for _ in 0..N {
            c.exchange(request);
        }
    });
    print_row(name, n, bytes);
}

fn print_row(name: &str, n: u64, bytes: u64) {
    println!(
        "| {name} | {:.1} | {:.0} |",
        n as f64 / N as f64,
        bytes as f64 / N as f64
    );
}

/// Allocations (reallocations counted) and bytes newly allocated while
/// `work` runs.
fn counted(work: impl FnOnce()) -> (u64, u64) {
    let before = GLOBAL.stats();
    work();
    let after = GLOBAL.stats();
    (
        (after.allocations + after.reallocations - before.allocations - before.reallocations)
            as u64,
        (after.bytes_allocated - before.bytes_allocated) as u64,
    )
}

fn request(method: &str, path: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nhost: bench\r\ncontent-type: application/octet-stream\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// How many POSTs the backend has answered (its `/stats`), asked on a
/// connection of its own.
fn backend_posts(backend: &str) -> u64 {
    let mut c = Client::connect(backend.parse().expect("the backend's address"));
    c.body_of(b"GET /stats HTTP/1.1\r\nhost: bench\r\n\r\n")
        .trim()
        .parse()
        .unwrap_or(0)
}

/// A keep-alive HTTP/1.1 client that reads into one buffer made up front,
/// so an exchange allocates nothing.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Where the last response's head ends and its body does.
    head: usize,
    end: usize,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("a read timeout");
        Client {
            stream,
            buf: vec![0; 1 << 20],
            head: 0,
            end: 0,
        }
    }

    /// Sends `request` and reads the whole response (Content-Length framed).
    fn exchange(&mut self, request: &[u8]) {
        self.stream.write_all(request).expect("send");
        let mut read = 0;
        loop {
            let n = self.stream.read(&mut self.buf[read..]).expect("receive");
            assert!(n > 0, "the gateway closed the connection");
            read += n;
            let Some(head) = self.buf[..read].windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = head + 4;
            let length = find_header(&self.buf[..head], b"content-length")
                .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if read >= head + length {
                (self.head, self.end) = (head, head + length);
                return;
            }
        }
    }

    fn body_of(&mut self, request: &[u8]) -> String {
        self.exchange(request);
        String::from_utf8_lossy(&self.buf[self.head..self.end]).into_owned()
    }

    fn header(&mut self, request: &[u8], name: &str) -> String {
        self.exchange(request);
        find_header(&self.buf[..self.head], name.as_bytes())
            .map(|v| String::from_utf8_lossy(v).trim().to_owned())
            .unwrap_or_default()
    }
}

/// The value of header `name` (lowercase) in a response head.
fn find_header<'a>(head: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        line[..colon].eq_ignore_ascii_case(name).then(|| {
            line[colon + 1..]
                .strip_suffix(b"\r")
                .unwrap_or(&line[colon + 1..])
        })
    })
}
