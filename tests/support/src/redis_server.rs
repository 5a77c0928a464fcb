//! A real `redis-server` for the Redis engine's tests: its own instance on a free port, in a
//! temporary directory, with an append-only file (fsync every second, Redis's default; a
//! `SHUTDOWN` writes it out), so that it can be stopped and started again with its data (or
//! killed).
//!
//! Without `redis-server` on the PATH a test is skipped with a message, unless
//! `TOWER_SSE_REQUIRE_REDIS=1` (as in CI) makes that a failure.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or stopped) `redis-server` owned by one test.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one, or says why not and returns `None` (a failure under
    /// `TOWER_SSE_REQUIRE_REDIS=1`).
    pub fn start() -> Option<Self> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !installed {
            let required = std::env::var("TOWER_SSE_REQUIRE_REDIS").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "TOWER_SSE_REQUIRE_REDIS=1, but redis-server is not installed (apt-get install redis-server)"
            );
            eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "tower-sse-redis-{}-{port}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())); // ok: test
        let mut server = Self {
            port,
            dir,
            child: None,
        };
        server.start_again();
        Some(server)
    }

    /// The server's process id, while it runs (for reading its CPU time from `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server (again) on its port and directory, and waits until it answers.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running"); // ok: test
        let log = self.dir.join("redis.log");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--protected-mode", "no", "--daemonize", "no"])
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("redis-server: {e}")); // ok: test
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.command("PING").as_deref() != Some("+PONG\r\n") {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start; see {}",
                log.display()
            ); // ok: test
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it as an operator would (`SHUTDOWN`: the append-only file is written), and waits
    /// for the process to exit.
    pub fn stop(&mut self) {
        let _ = self.command("SHUTDOWN");
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Kills it (no shutdown).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends one inline command and returns the first reply read (a test helper for simple
    /// replies; `None` when it cannot connect).
    pub fn command(&self, command: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
        let mut buf = vec![0; 1 << 20];
        let n = stream.read(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static NEXT_DIR: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .unwrap_or_else(|e| panic!("a free port: {e}")) // ok: test
}
