//! A throw-away `nats-server -js` on a loopback port the test picks, with file storage in a
//! fresh directory, so a test can kill and restart it without losing what it acknowledged.
//! Skips (prints why) when `nats-server` is missing, except under `CI`.

#![allow(dead_code)]

use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::{Child, Command},
};

pub struct NatsServer {
    port: u16,
    monitor: u16,
    dir: PathBuf,
    child: Option<Child>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl NatsServer {
    /// Starts one, or returns `None` (after printing why) when `nats-server` is missing
    /// outside CI. Under CI a missing server fails the test.
    pub async fn start() -> Option<Self> {
        if !super::external(
            "nats-server",
            super::program_available("nats-server"),
            "apt-get install nats-server, or run `bash .ci/setup` as root",
        ) {
            return None;
        }
        // A free port can be taken by another test before the server binds it (other tests
        // stop and restart their servers): new ports, a few times.
        for _ in 0..3 {
            let (port, monitor) = (free_port(), free_port());
            let dir =
                std::env::temp_dir().join(format!("tower-sse-nats-{}-{port}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("temp dir");
            let mut server = Self {
                port,
                monitor,
                dir,
                child: None,
            };
            if server.try_spawn().await {
                return Some(server);
            }
        }
        panic!("nats-server did not start on three pairs of free ports");
    }

    async fn spawn(&mut self) {
        assert!(
            self.try_spawn().await,
            "nats-server on port {} did not become healthy in 5 s",
            self.port
        );
    }

    /// Starts the server; whether it answers on both its ports within 5 s (a server that
    /// could not bind a port exits).
    async fn try_spawn(&mut self) -> bool {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-m")
            .arg(self.monitor.to_string())
            .arg("-js")
            .arg("-sd")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server starts");
        self.child = Some(child);
        for _ in 0..250 {
            let exited = self
                .child
                .as_mut()
                .is_none_or(|child| !matches!(child.try_wait(), Ok(None)));
            if exited {
                self.child = None;
                return false;
            }
            if self.healthy().await
                && tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill().await;
        false
    }

    async fn healthy(&self) -> bool {
        self.monitor_get("/healthz?js-enabled-only=true")
            .await
            .is_some_and(|body| body.contains("ok"))
    }

    /// `GET` on the monitoring port; the body.
    pub async fn monitor_get(&self, path: &str) -> Option<String> {
        let mut conn = TcpStream::connect(("127.0.0.1", self.monitor)).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        conn.write_all(request.as_bytes()).await.ok()?;
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(2), conn.read_to_end(&mut reply))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&reply).into_owned();
        text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned())
    }

    /// How many client connections the server has.
    pub async fn connections(&self) -> usize {
        let body = self.monitor_get("/connz").await.unwrap_or_default();
        let value: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        value["num_connections"].as_u64().unwrap_or(0) as usize
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts it again on the same port, with the same store directory.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }

    /// Kills it and keeps a copy of its store (as a backup would be, or a disk that had not
    /// synced yet); it stays down until [`restore`](Self::restore) or
    /// [`start_again`](Self::start_again).
    pub async fn kill_and_copy_store(&mut self) -> PathBuf {
        self.kill().await;
        let copy = self.dir.with_extension("copy");
        let _ = std::fs::remove_dir_all(&copy);
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(&self.dir)
            .arg(&copy)
            .status()
            .expect("cp");
        assert!(status.success());
        copy
    }

    /// Starts it (after a kill) with what its store held (the same).
    pub async fn start_again(&mut self) {
        self.spawn().await;
    }

    /// Kills it and starts it again with the store `copy` (taken earlier) instead of its own:
    /// a server that comes back without messages it had acknowledged. `None`: an empty store
    /// (everything lost).
    pub async fn restart_with_store(&mut self, copy: Option<&std::path::Path>) {
        self.kill().await;
        let _ = std::fs::remove_dir_all(&self.dir);
        match copy {
            Some(copy) => {
                let status = std::process::Command::new("cp")
                    .arg("-a")
                    .arg(copy)
                    .arg(&self.dir)
                    .status()
                    .expect("cp");
                assert!(status.success());
            }
            None => std::fs::create_dir_all(&self.dir).expect("store dir"),
        }
        self.spawn().await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(self.dir.with_extension("copy"));
    }
}
