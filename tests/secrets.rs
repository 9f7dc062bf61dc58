//! Credentials in the keyring, for real: a private D-Bus session bus and a
//! gnome-keyring-daemon (Debian's Secret Service) that this test starts in a
//! throwaway HOME and stops by PID, then `songfs::secrets` set/get/delete through it;
//! and `songfs init` with S3 keys, which must end up in the keyring and nowhere else
//! (config.json, logs, the store, the command's output are grepped for the secret).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::s3server::S3Server;

/// A session bus + Secret Service of our own. Both processes die with the guard.
struct SecretService {
    bus: Child,
    keyring: Option<Child>,
    address: String,
    dir: tempfile::TempDir,
}

impl SecretService {
    fn start() -> SecretService {
        let dir = tempfile::Builder::new()
            .prefix("songfs-keyring-")
            .tempdir()
            .unwrap();
        for sub in ["home", "run", "data"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let socket = dir.path().join("run/bus");
        let mut bus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .arg(format!("--address=unix:path={}", socket.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (package dbus) must be installed: run scripts/deps");
        let mut address = String::new();
        BufReader::new(bus.stdout.take().unwrap())
            .read_line(&mut address)
            .unwrap();
        let address = address.trim().to_string();
        assert!(
            address.starts_with("unix:"),
            "dbus-daemon printed {address:?}"
        );
        let mut svc = SecretService {
            bus,
            keyring: None,
            address,
            dir,
        };
        // A fresh HOME: --unlock then creates an unlocked login keyring, no prompter.
        let mut keyring = svc
            .env(&mut Command::new("gnome-keyring-daemon"))
            .args(["--unlock", "--foreground", "--components=secrets"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "gnome-keyring-daemon (package gnome-keyring) must be installed: run scripts/deps",
            );
        let mut stdin = keyring.stdin.take().unwrap();
        stdin.write_all(b"keyring-test-pw").unwrap();
        drop(stdin);
        svc.keyring = Some(keyring);
        svc.wait_for_the_service();
        svc
    }

    fn env<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        let d = self.dir.path();
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.address)
            .env("HOME", d.join("home"))
            .env("XDG_RUNTIME_DIR", d.join("run"))
            .env("XDG_DATA_HOME", d.join("data"))
            .env_remove("SONGFS_KEYRING")
    }

    /// Until org.freedesktop.secrets answers on the bus (the daemon registers late).
    fn wait_for_the_service(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = self
                .env(&mut Command::new("dbus-send"))
                .args([
                    "--session",
                    "--print-reply",
                    "--dest=org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus.ListNames",
                ])
                .output()
                .expect("dbus-send");
            if String::from_utf8_lossy(&out.stdout).contains("org.freedesktop.secrets") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gnome-keyring-daemon did not register org.freedesktop.secrets"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The keyring files of the daemon (where the secrets live, encrypted).
    fn keyring_dir(&self) -> PathBuf {
        self.dir.path().join("data/keyrings")
    }
}

impl Drop for SecretService {
    fn drop(&mut self) {
        if let Some(mut k) = self.keyring.take() {
            let _ = k.kill();
            let _ = k.wait();
        }
        let _ = self.bus.kill();
        let _ = self.bus.wait();
    }
}

/// Runs this test binary's `probe` helper (below) under the service: the keyring
/// choice is per process, so each check gets a process of its own.
fn probe(svc: &SecretService, home: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    svc.env(&mut cmd)
        .env("SONGFS_HOME", home)
        .env("SONGFS_PROBE", args.join("\u{1f}"))
        .args([
            "--exact",
            "probe_helper",
            "--nocapture",
            "--include-ignored",
        ]);
    cmd.output().unwrap()
}

/// Not a test on its own: the child process `probe` starts. Does one secrets call
/// named by SONGFS_PROBE and prints its answer.
#[test]
#[ignore = "helper: run by the Secret Service test in a child process"]
fn probe_helper() {
    let Ok(spec) = std::env::var("SONGFS_PROBE") else {
        return;
    };
    let args: Vec<&str> = spec.split('\u{1f}').collect();
    use songfs::secrets;
    let answer = match args.as_slice() {
        ["set", account, secret] => format!(
            "{:?}",
            secrets::set(secrets::SERVICE, account, secret).unwrap()
        ),
        ["get", account] => format!("{:?}", secrets::get(secrets::SERVICE, account).unwrap()),
        ["delete", account] => format!("{:?}", secrets::delete(secrets::SERVICE, account).unwrap()),
        other => panic!("unknown probe {other:?}"),
    };
    println!("PROBE={answer}");
}

fn answer(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("PROBE="))
        .unwrap_or_else(|| panic!("no answer in {stdout}"))
        .to_string()
}

#[test]
fn a_token_is_stored_read_and_deleted_in_a_real_secret_service() {
    let svc = SecretService::start();
    let home = common::temp_home();
    const TOKEN: &str = "refresh-PLANTED-4711";
    let set = probe(&svc, home.path(), &["set", "gdrive", TOKEN]);
    assert_eq!(
        answer(&set),
        "Keyring",
        "went to the file, not the Secret Service"
    );
    // Another process finds it: it is in the daemon, not in songfs's memory.
    let got = probe(&svc, home.path(), &["get", "gdrive"]);
    assert_eq!(answer(&got), format!("Some({TOKEN:?})"));
    // Ask the Secret Service directly, with libsecret's tool when it is there.
    if Command::new("secret-tool")
        .arg("--version")
        .output()
        .is_ok()
    {
        let out = svc
            .env(&mut Command::new("secret-tool"))
            .args(["search", "--all", "service", "songfs"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(text.contains("gdrive"), "{text}");
    }
    // No fallback file, and the secret is not in plain text in the daemon's files.
    assert!(!home.path().join("credentials.json").exists());
    for f in common::files_under(&svc.keyring_dir()) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(TOKEN),
            "{} holds it in clear",
            f.display()
        );
    }
    assert_eq!(
        answer(&probe(&svc, home.path(), &["delete", "gdrive"])),
        "true"
    );
    assert_eq!(
        answer(&probe(&svc, home.path(), &["get", "gdrive"])),
        "None"
    );
    assert_eq!(
        answer(&probe(&svc, home.path(), &["delete", "gdrive"])),
        "false"
    );
}

#[test]
fn without_a_session_bus_secrets_go_to_a_file_only_the_user_reads_and_songfs_says_so_once() {
    let home = common::temp_home();
    let run = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env("SONGFS_HOME", home.path())
        // A bus address where nothing listens: the headless-server case.
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            format!("unix:path={}/none", run.path().display()),
        )
        .env("XDG_RUNTIME_DIR", run.path())
        .env_remove("SONGFS_KEYRING")
        .env("SONGFS_PROBE", "set\u{1f}webdav:a@h\u{1f}pw-PLANTED-9")
        .args([
            "--exact",
            "probe_helper",
            "--nocapture",
            "--include-ignored",
        ]);
    let out = cmd.output().unwrap();
    assert_eq!(answer(&out), "File");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("no system keyring").count(), 1, "{stderr}");
    assert!(!stderr.contains("pw-PLANTED-9"), "{stderr}");
    let creds = home.path().join("credentials.json");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&creds).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "readable by others: {mode:o}");
}

#[test]
fn init_files_s3_keys_in_the_keyring_and_nowhere_else() {
    let svc = SecretService::start();
    let s3 = S3Server::start();
    let home = common::temp_home();
    let secret = s3.secret_key();
    let mut cmd = common::songfs(home.path());
    svc.env(&mut cmd)
        // No AWS chain: the keys must come from the keyring.
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", home.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.path().join("none"))
        .env("AWS_REGION", "us-east-1")
        .args([
            "init",
            "--store",
            &s3.url("lib"),
            "--s3-endpoint",
            &s3.endpoint(),
        ])
        .args([
            "--device-name",
            "desk",
            "--s3-access-key",
            s3.access_key(),
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{secret}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "init failed: {printed}");
    assert!(!printed.contains(secret), "printed the secret: {printed}");
    // A later command reaches the store with the keys from the keyring alone.
    let mut status = common::songfs(home.path());
    svc.env(&mut status)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", home.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.path().join("none"))
        .env("AWS_REGION", "us-east-1")
        .args(["sync"]);
    let sync = status.output().unwrap();
    let sync_text =
        String::from_utf8_lossy(&sync.stdout).into_owned() + &String::from_utf8_lossy(&sync.stderr);
    assert!(
        sync.status.success(),
        "sync with keyring keys failed: {sync_text}"
    );
    assert!(!sync_text.contains(secret), "{sync_text}");
    assert!(
        !home.path().join("credentials.json").exists(),
        "went to the file, not the keyring"
    );
    for root in [home.path().to_path_buf(), s3.data_dir()] {
        for f in common::files_under(&root) {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "{} holds the S3 secret",
                f.display()
            );
        }
    }
}

/// The passphrase of an encrypted store goes through the same keyring as every other
/// secret: into the Secret Service when one answers (so a later command needs no file),
/// and never into the credentials file, a songfs file, the store or the output.
#[test]
fn an_encrypted_stores_passphrase_is_kept_in_the_secret_service_and_nowhere_else() {
    const PASSPHRASE: &str = "keyring test passphrase PLANTED-77";
    let svc = SecretService::start();
    let home = common::temp_home();
    let store = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let pass_file = scratch.path().join("pass");
    std::fs::write(&pass_file, format!("{PASSPHRASE}\n")).unwrap();
    let url = format!("file://{}", store.path().display());
    let mut init = common::songfs(home.path());
    svc.env(&mut init)
        .env("SONGFS_TEST_WEAK_KDF", "1")
        .env("SONGFS_PASSPHRASE_FILE", &pass_file)
        .args([
            "init",
            "--store",
            &url,
            "--encrypt",
            "--device-name",
            "desk",
        ]);
    let init = init.output().unwrap();
    assert!(
        init.status.success(),
        "init failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    // Without the file, a later command opens the store with the kept passphrase.
    std::fs::remove_file(&pass_file).unwrap();
    let mut sync = common::songfs(home.path());
    svc.env(&mut sync)
        .env("SONGFS_TEST_WEAK_KDF", "1")
        .arg("sync");
    let sync = sync.output().unwrap();
    assert!(
        sync.status.success(),
        "sync without the passphrase file failed: {}",
        String::from_utf8_lossy(&sync.stderr)
    );
    // It is in the Secret Service, under songfs's service name.
    let out = svc
        .env(&mut Command::new("secret-tool"))
        .args(["search", "--all", "service", "songfs"])
        .output()
        .expect("secret-tool (package libsecret-tools) must be installed: run scripts/deps");
    let listed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(listed.contains("store-passphrase/"), "{listed}");
    assert!(!home.path().join("credentials.json").exists());
    for root in [home.path(), store.path(), svc.keyring_dir().as_path()] {
        for f in common::files_under(root) {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(PASSPHRASE),
                "{} holds the passphrase",
                f.display()
            );
        }
    }
    for o in [&init.stdout, &init.stderr, &sync.stdout, &sync.stderr] {
        assert!(!String::from_utf8_lossy(o).contains(PASSPHRASE));
    }
}
