//! Throwaway OpenPGP keys, made by gpg in a GNUPGHOME of their own: what publish signs with,
//! what a test bucket's indexes are signed with, and what hosts are given to check them.

use std::path::PathBuf;
use std::process::Command;

use crate::checked_output;

/// A key made by gpg in its own GNUPGHOME, whose agent stops on drop.
pub struct TestKey {
    home: tempfile::TempDir,
    passphrase: String,
    /// The armored private key, as SYSEXT_GPG_KEY holds it.
    pub secret: String,
    /// Binary public keyring (`gpg --export`), as hosts install it.
    pub public: PathBuf,
    /// The same public key, armored.
    pub armored_public: PathBuf,
    pub fingerprint: String,
}

impl TestKey {
    /// A signing key named `name`, without a passphrase.
    pub fn new(name: &str) -> TestKey {
        TestKey::generate(name, "")
    }

    pub fn generate(name: &str, passphrase: &str) -> TestKey {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::Builder::new()
            .prefix("gnupg.")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir()
            .unwrap();
        let mut key = TestKey {
            public: home.path().join(format!("{name}.gpg")),
            armored_public: home.path().join(format!("{name}.asc")),
            home,
            passphrase: passphrase.to_string(),
            secret: String::new(),
            fingerprint: String::new(),
        };
        let uid = format!("{name} <{name}@alloy-sysext.invalid>");
        key.gpg(&["--quick-gen-key", &uid, "ed25519", "sign", "never"]);
        key.secret = key.gpg(&["--armor", "--export-secret-keys"]);
        key.gpg(&["--output", key.public.to_str().unwrap(), "--export"]);
        let armored = key.armored_public.to_str().unwrap();
        key.gpg(&["--armor", "--output", armored, "--export"]);
        key.fingerprint = key
            .gpg(&["--with-colons", "--list-keys"])
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .map(|l| l.trim_matches(':').to_string())
            .unwrap();
        assert!(key.secret.contains("-----BEGIN PGP PRIVATE KEY BLOCK-----"));
        assert_eq!(key.fingerprint.len(), 40, "{}", key.fingerprint);
        key
    }

    fn gpg(&self, args: &[&str]) -> String {
        checked_output(
            Command::new("gpg")
                .env("GNUPGHOME", self.home.path())
                .args(["--batch", "--no-tty", "--pinentry-mode", "loopback"])
                .args(["--passphrase", &self.passphrase])
                .args(args),
        )
    }

    /// The binary detached signature of `data`, as SHA256SUMS.gpg holds it.
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("SHA256SUMS");
        let output = dir.path().join("SHA256SUMS.gpg");
        std::fs::write(&input, data).unwrap();
        let (input_arg, output_arg) = (input.to_str().unwrap(), output.to_str().unwrap());
        self.gpg(&["--output", output_arg, "--detach-sign", input_arg]);
        std::fs::read(output).unwrap()
    }

    /// Whether gpgv, with this key's public keyring, accepts `signature` of `data`.
    pub fn signed(&self, data: &[u8], signature: &[u8]) -> bool {
        let dir = tempfile::tempdir().unwrap();
        let (data_path, signature_path) = (dir.path().join("data"), dir.path().join("data.gpg"));
        std::fs::write(&data_path, data).unwrap();
        std::fs::write(&signature_path, signature).unwrap();
        Command::new("gpgv")
            .arg("--homedir")
            .arg(dir.path())
            .arg("--keyring")
            .arg(&self.public)
            .arg(&signature_path)
            .arg(&data_path)
            .output()
            .expect("running gpgv")
            .status
            .success()
    }
}

impl Drop for TestKey {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "all"])
            .output();
    }
}
