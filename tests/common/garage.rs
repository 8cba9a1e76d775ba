//! A real S3 server for the object-storage tests: Garage, started on 127.0.0.1 in a
//! temporary folder as a one-node cluster (`server --single-node --default-bucket`), with
//! its key and bucket made at start-up. The binary comes from `EPK_GARAGE`, which
//! `scripts/s3-test.sh` sets after installing Garage from crates.io into a cache folder.
//! Garage is a test tool only (AGPL-3.0); nothing of it is linked into epk.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bucket the server makes at start-up.
pub const BUCKET: &str = "epk";
/// Garage's key ids are `GK` and 24 hex digits; the secret 64.
const KEY_ID: &str = "GK0123456789abcdef01234567";
const SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const RPC_SECRET: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

/// A running Garage server; stopped when dropped.
pub struct Garage {
    binary: PathBuf,
    dir: tempfile::TempDir,
    api: u16,
    child: Option<Child>,
}

impl Garage {
    /// Starts a server and waits until its bucket answers.
    pub fn start() -> Self {
        let binary = PathBuf::from(std::env::var_os("EPK_GARAGE").expect(
            "EPK_GARAGE names the garage binary: run these tests through scripts/s3-test.sh",
        ));
        let dir = tempfile::tempdir().unwrap();
        let (api, rpc) = (free_port(), free_port());
        let config = format!(
            "metadata_dir = \"{meta}\"\ndata_dir = \"{data}\"\ndb_engine = \"sqlite\"\n\
             replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
             rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{RPC_SECRET}\"\n\n\
             [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{api}\"\n",
            meta = dir.path().join("meta").display(),
            data = dir.path().join("data").display(),
        );
        std::fs::write(dir.path().join("garage.toml"), config).unwrap();
        let mut garage = Garage {
            binary,
            dir,
            api,
            child: None,
        };
        garage.restart();
        garage
    }

    /// The server's log so far, for failed assertions.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("garage.log")).unwrap_or_default()
    }

    /// Starts the server again on the same data (after [`Garage::stop`]).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join("garage.log")).unwrap();
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(["server", "--single-node", "--default-bucket"])
            .env("GARAGE_DEFAULT_ACCESS_KEY", KEY_ID)
            .env("GARAGE_DEFAULT_SECRET_KEY", SECRET)
            .env("GARAGE_DEFAULT_BUCKET", BUCKET)
            .env("RUST_LOG", "garage=warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Stops the server (SIGKILL: no goodbye to clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The client's environment: the standard AWS variables, and retries bounded at two
    /// seconds so that a stopped server is noticed quickly.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", self.api)),
            ("AWS_ACCESS_KEY_ID", KEY_ID.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.into()),
            ("AWS_REGION", "garage".into()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("EPK_S3_RETRY_TIMEOUT", "2".into()),
        ]
    }

    /// `command` with the client's environment.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command.envs(self.env()).env_remove("RUST_BACKTRACE");
        command
    }

    /// Waits until the port listens and the bucket answers a read (the key and bucket are
    /// made just after the server starts).
    fn wait_ready(&mut self) {
        let started = Instant::now();
        let replay = crate::common::built("replay");
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "garage did not come up in 60 s:\n{}",
                self.log()
            );
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("garage exited ({status}):\n{}", self.log());
            }
            let listening = TcpStream::connect(("127.0.0.1", self.api)).is_ok();
            if listening {
                let probe = self
                    .command(&replay)
                    .args(["info", &format!("s3://{BUCKET}/no-such-store")])
                    .stdout(Stdio::null())
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&probe.stderr).contains("no root metadata") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
