//! The programs outside Rust that some system tests run: SoftHSM2, rsyslog and its OpenSSL
//! driver, moto (with boto3), Azurite and Go (with golang.org/x/mod, for a tlog-tiles
//! client written elsewhere). `./scripts/test` installs them; a test that needs
//! one calls [`require`] before starting anything, so that plain `cargo test` on a machine
//! without them fails at once with one line naming that script, rather than each test
//! panicking its own way (some after a 30 s wait for a port).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Once, OnceLock};

#[derive(Clone, Copy, Debug)]
pub enum Tool {
    /// `softhsm2-util` and the PKCS#11 module `libsofthsm2.so`.
    Softhsm2,
    /// `rsyslogd`.
    Rsyslog,
    /// rsyslog's OpenSSL stream driver (`lmnsd_ossl.so`), for syslog over TLS.
    RsyslogOpenssl,
    /// moto's S3 server and boto3 (`pip install 'moto[server]'`).
    Moto,
    /// `azurite-blob`.
    Azurite,
    /// `kubernetes-validate` (PyPI): Kubernetes manifests against the API schemas.
    KubernetesValidate,
    /// `systemd-analyze` (Debian's systemd): unit files.
    SystemdAnalyze,
    /// `go` with `golang.org/x/mod` in Debian's GOPATH (`golang-golang-x-mod-dev`): the
    /// C2SP tlog-tiles client of tests/go/tilesclient, on Go's `sumdb/tlog` and `note`.
    GoXMod,
}

impl Tool {
    /// The name of what to install: the apt, pip or npm package.
    pub fn package(self) -> &'static str {
        match self {
            Tool::Softhsm2 => "softhsm2",
            Tool::Rsyslog => "rsyslog",
            Tool::RsyslogOpenssl => "rsyslog-openssl",
            Tool::Moto => "moto[server]",
            Tool::Azurite => "azurite",
            Tool::KubernetesValidate => "kubernetes-validate",
            Tool::SystemdAnalyze => "systemd",
            Tool::GoXMod => "golang-go golang-golang-x-mod-dev",
        }
    }

    fn present(self) -> bool {
        match self {
            Tool::Softhsm2 => softhsm2_module().is_some() && which("softhsm2-util").is_some(),
            Tool::Rsyslog => which("rsyslogd").is_some(),
            Tool::RsyslogOpenssl => rsyslog_module_dirs().any(|d| d.join("lmnsd_ossl.so").exists()),
            // Importing moto takes a second or so: asked once per test binary.
            Tool::Moto => *MOTO.get_or_init(|| {
                Command::new("python3")
                    .args(["-c", "import moto.server, boto3"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            }),
            Tool::Azurite => azurite_blob().is_file(),
            Tool::KubernetesValidate => which("kubernetes-validate").is_some(),
            Tool::SystemdAnalyze => which("systemd-analyze").is_some(),
            Tool::GoXMod => which("go").is_some() && Path::new(GO_X_MOD_TLOG).is_dir(),
        }
    }
}

static MOTO: OnceLock<bool> = OnceLock::new();

/// Fails the calling test with one line when `tool` is missing. The first such failure in a
/// test binary also writes that line straight to stderr (past the test harness's capture),
/// so it shows once at the top of the run and not only in each failure's report.
pub fn require(tool: Tool) {
    if tool.present() {
        return;
    }
    let line = format!(
        "missing {}: run ./scripts/test, which installs what the tests need",
        tool.package()
    );
    static SAID: Once = Once::new();
    SAID.call_once(|| {
        let _ = writeln!(std::io::stderr(), "{line}");
    });
    panic!("{line}");
}

/// The first `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}

/// SoftHSM2's PKCS#11 module on this machine (Debian puts it in one of these).
pub fn softhsm2_module() -> Option<PathBuf> {
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Where rsyslog's loadable modules may be: `/usr/lib/rsyslog`, `/usr/lib/<triplet>/rsyslog`.
fn rsyslog_module_dirs() -> impl Iterator<Item = PathBuf> {
    let triplets = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("rsyslog"));
    [
        PathBuf::from("/usr/lib/rsyslog"),
        PathBuf::from("/usr/lib64/rsyslog"),
    ]
    .into_iter()
    .chain(triplets)
    .filter(|d| d.is_dir())
}

/// `azurite-blob`: `$AZURITE_BLOB`, else from `PATH`, else where `./scripts/test` installs it.
pub fn azurite_blob() -> PathBuf {
    std::env::var_os("AZURITE_BLOB")
        .map(PathBuf::from)
        .or_else(|| which("azurite-blob"))
        .unwrap_or_else(|| {
            PathBuf::from("/opt/auditlog-tools/azurite/node_modules/.bin/azurite-blob")
        })
}

/// Where Debian's golang-golang-x-mod-dev puts Go's transparency-log package.
const GO_X_MOD_TLOG: &str = "/usr/share/gocode/src/golang.org/x/mod/sumdb/tlog";

/// Builds the Go program in `tests/go/<name>` into `out_dir` and returns its path: in
/// GOPATH mode over Debian's packaged sources, so nothing is fetched from the network.
pub fn build_go(name: &str, out_dir: &Path) -> PathBuf {
    require(Tool::GoXMod);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("go").join(name);
    let exe = out_dir.join(name);
    let out = Command::new("go")
        .args(["build", "-o"])
        .arg(&exe)
        .arg(".")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", out_dir.join("gocache"))
        .env("GOFLAGS", "")
        .output()
        .expect("run go build");
    assert!(
        out.status.success(),
        "go build {}: {}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}
