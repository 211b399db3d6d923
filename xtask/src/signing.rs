//! Detached OpenPGP signatures of SHA256SUMS (`SHA256SUMS.gpg`), the file systemd-sysupdate checks
//! with `Verify=yes`. gpg runs in a private, temporary GNUPGHOME: the signing key is imported
//! through stdin (never argv, never the user's keyring) and is gone, agent included, afterwards.

use std::path::{Path, PathBuf};
use std::process::Output;

use anyhow::{bail, Context};
use xshell::{cmd, Shell};

use crate::util::{files, interrupt};

/// The environment variable holding the armored private key that `publish` signs with.
pub const SIGNING_KEY_ENV: &str = "SYSEXT_GPG_KEY";

const ARMORED_SECRET_KEY: &str = "-----BEGIN PGP PRIVATE KEY BLOCK-----";

/// The name of every private GNUPGHOME we make, in TMPDIR.
const HOME_PREFIX: &str = "alloy-sysext-gnupg.";

/// A home left unlocked for this long belongs to a run that was killed outright (SIGKILL, a
/// crash, power loss): its key is removed and its agent stopped by the next run.
const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

/// A throwaway GNUPGHOME (mode 0700) whose gpg-agent is stopped and files removed on drop,
/// and on Ctrl-C or SIGTERM ([`interrupt`]): the key never outlives the process on disk. It is
/// locked while it lives, so that a later run can tell a home left by a killed run.
struct GpgHome {
    // Fields drop in order: the home is removed before the interrupt clean-up is forgotten,
    // so a signal in between cannot leave the key behind.
    dir: tempfile::TempDir,
    _on_interrupt: interrupt::OnInterrupt,
    _lock: std::fs::File,
}

impl GpgHome {
    fn new_in(base: &Path) -> anyhow::Result<GpgHome> {
        use std::os::unix::fs::PermissionsExt;
        files::sweep_abandoned(base, HOME_PREFIX, Some(ABANDONED_AFTER), |home| {
            stop_agent(home);
            interrupt::remove_path(home);
        });
        let dir = tempfile::Builder::new()
            .prefix(HOME_PREFIX)
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(base)
            .with_context(|| format!("creating a private GNUPGHOME in {}", base.display()))?;
        let home = dir.path().to_path_buf();
        let on_interrupt = interrupt::on_interrupt(move || {
            stop_agent(&home);
            interrupt::remove_path(&home);
        });
        let lock = files::lock_new_dir(dir.path())?;
        Ok(GpgHome {
            dir,
            _on_interrupt: on_interrupt,
            _lock: lock,
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn shell(&self) -> anyhow::Result<Shell> {
        let sh = Shell::new()?;
        sh.set_var("GNUPGHOME", self.path());
        Ok(sh)
    }
}

impl Drop for GpgHome {
    fn drop(&mut self) {
        stop_agent(self.path());
    }
}

/// Stops the gpg-agent (and any gpg) of `home`: `gpgconf --kill all` as gpg intends, then
/// SIGTERM to every process still running with this GNUPGHOME (an agent that was starting when
/// gpgconf asked, or one gpgconf could not reach).
fn stop_agent(home: &Path) {
    let mut gpgconf = std::process::Command::new("gpgconf");
    gpgconf
        .args(["--kill", "all"])
        .env_clear()
        .env("GNUPGHOME", home)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(path) = std::env::var_os("PATH") {
        gpgconf.env("PATH", path);
    }
    if let Ok(mut child) = gpgconf.spawn() {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while matches!(child.try_wait(), Ok(None)) {
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    interrupt::terminate(|| interrupt::processes_with_env("GNUPGHOME", home));
}

/// The whole environment gpg and its agent get: their home and where to find programs.
/// Nothing else (no R2 or AWS keys, no tokens) reaches them or the agent they start.
fn gpg_env(sh: &Shell) -> Vec<(&'static str, std::ffi::OsString)> {
    ["GNUPGHOME", "PATH"]
        .into_iter()
        .filter_map(|name| Some((name, sh.var_os(name)?)))
        .collect()
}

/// Runs `command` (gpg or gpgv) with [`gpg_env`] for its whole environment, printing nothing,
/// whatever its exit status: what it printed and how it ended.
fn run_gpg(sh: &Shell, command: xshell::Cmd<'_>) -> xshell::Result<Output> {
    command
        .env_clear()
        .envs(gpg_env(sh))
        .quiet()
        .ignore_status()
        .output()
}

/// gpg's stderr for an error message, without any line that also occurs in `secret`.
fn redact(stderr: &[u8], secret: &str) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .filter(|line| line.len() < 8 || !secret.contains(line))
        .collect::<Vec<_>>()
        .join("; ")
}

fn checked(
    output: Output,
    what: impl FnOnce(String) -> String,
    secret: &str,
) -> anyhow::Result<Output> {
    if output.status.success() {
        Ok(output)
    } else {
        bail!(
            "{} ({})",
            what(redact(&output.stderr, secret)),
            output.status
        )
    }
}

/// The fingerprints of the primary secret keys in `gpg --with-colons --list-secret-keys` output.
pub fn secret_key_fingerprints(colons: &str) -> Vec<String> {
    let mut fingerprints = Vec::new();
    let mut after_primary = false;
    for line in colons.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        match fields.first().copied() {
            Some("sec") => after_primary = true,
            Some("fpr") if after_primary => {
                if let Some(fpr) = fields.get(9).filter(|f| !f.is_empty()) {
                    fingerprints.push(fpr.to_string());
                }
                after_primary = false;
            }
            Some("ssb") | Some("pub") | Some("sub") => after_primary = false,
            _ => {}
        }
    }
    fingerprints
}

/// The fingerprint in a `[GNUPG:] VALIDSIG <fpr> ...` status line, if the signature was good.
pub fn valid_signature(status: &str) -> Option<String> {
    status.lines().find_map(|line| {
        let mut words = line.strip_prefix("[GNUPG:] VALIDSIG ")?.split_whitespace();
        words.next().map(str::to_string)
    })
}

fn check_armored(armored_private_key: &str) -> anyhow::Result<()> {
    if !armored_private_key.contains(ARMORED_SECRET_KEY) {
        bail!("{SIGNING_KEY_ENV} does not hold an armored OpenPGP private key (it should contain {ARMORED_SECRET_KEY:?}; export one with `gpg --armor --export-secret-keys KEYID`)");
    }
    Ok(())
}

/// Imports the armored private key into the shell's GNUPGHOME and returns the fingerprint of
/// its one secret key.
fn import_secret_key(sh: &Shell, armored_private_key: &str) -> anyhow::Result<String> {
    check_armored(armored_private_key)?;
    let imported = run_gpg(
        sh,
        cmd!(sh, "gpg --batch --no-tty --import").stdin(armored_private_key),
    )
    .context("running gpg (install it: apt-get install gnupg)")?;
    checked(
        imported,
        |stderr| format!("gpg could not import the key in {SIGNING_KEY_ENV}: {stderr}"),
        armored_private_key,
    )?;
    let listed = run_gpg(
        sh,
        cmd!(sh, "gpg --batch --no-tty --with-colons --list-secret-keys"),
    )?;
    let listed = checked(
        listed,
        |e| format!("gpg --list-secret-keys failed: {e}"),
        armored_private_key,
    )?;
    let fingerprints = secret_key_fingerprints(&String::from_utf8_lossy(&listed.stdout));
    match fingerprints.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("{SIGNING_KEY_ENV} holds no usable secret key (only a public key?)"),
        many => bail!(
            "{SIGNING_KEY_ENV} holds {} secret keys ({}): export only the one to sign with",
            many.len(),
            many.join(", ")
        ),
    }
}

/// Signs `data` with the armored private key (from SYSEXT_GPG_KEY), in a temporary GNUPGHOME
/// under `tmp`: writes the binary detached signature to `signature`, whole or not at all. The
/// key must have no passphrase. Returns the fingerprint of the key that signed.
pub fn sign_detached_in(
    tmp: &Path,
    armored_private_key: &str,
    data: &Path,
    signature: &Path,
) -> anyhow::Result<String> {
    check_armored(armored_private_key)?;
    if !data.is_file() {
        bail!("cannot sign {}: no such file", data.display());
    }
    let home = GpgHome::new_in(tmp)?;
    let sh = home.shell()?;
    let fingerprint = import_secret_key(&sh, armored_private_key)?;

    sign_with(&sh, &fingerprint, data, signature, armored_private_key)?;
    Ok(fingerprint)
}

/// Signs `data` with the imported key `fingerprint`: the binary detached signature goes to
/// `signature`, whole or not at all.
fn sign_with(
    sh: &Shell,
    fingerprint: &str,
    data: &Path,
    signature: &Path,
    armored_private_key: &str,
) -> anyhow::Result<()> {
    let dir = signature
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let partial = tempfile::Builder::new()
        .prefix(".SHA256SUMS.gpg.")
        .tempfile_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    let partial_path = partial.path().to_path_buf();
    let signed = run_gpg(sh, cmd!(
        sh,
        "gpg --batch --no-tty --yes --pinentry-mode loopback --passphrase-fd 0 --local-user {fingerprint} --digest-algo SHA256 --detach-sign --output {partial_path} {data}"
    ).stdin(""))?;
    checked(
        signed,
        |stderr| {
            format!("gpg could not sign {} with key {fingerprint} from {SIGNING_KEY_ENV} (a key with a passphrase is not supported): {stderr}", data.display())
        },
        armored_private_key,
    )?;
    partial
        .persist(signature)
        .with_context(|| format!("moving the signature to {}", signature.display()))?;
    Ok(())
}

/// The key in SYSEXT_GPG_KEY for a whole publish: imported once into one private GNUPGHOME,
/// proven to sign before anything is uploaded, with its public half exported to check
/// signatures. The home (key and agent) is removed on drop. Holds key material: no `Debug`.
pub struct Signer {
    home: GpgHome,
    fingerprint: String,
    pubring: PathBuf,
}

impl Signer {
    /// Imports `armored_private_key` (through stdin) in a private directory under `tmp`.
    pub fn new(tmp: &Path, armored_private_key: &str) -> anyhow::Result<Signer> {
        check_armored(armored_private_key)?;
        let home = GpgHome::new_in(tmp)?;
        let sh = home.shell()?;
        let fingerprint = import_secret_key(&sh, armored_private_key)?;
        let pubring = home.path().join("signer-public.gpg");
        export_public(&sh, &fingerprint, &pubring, armored_private_key)?;
        let signer = Signer {
            home,
            fingerprint,
            pubring,
        };
        // A test signature, checked: a key with a passphrase or without signing use fails now.
        let probe = b"alloy-sysext: checking the signing key\n";
        let signature = signer.sign(probe)?;
        signer.check(probe, &signature)?;
        Ok(signer)
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// A detached signature of `data`.
    pub fn sign(&self, data: &[u8]) -> anyhow::Result<Vec<u8>> {
        let (data_path, signature_path) = (self.path("to-sign"), self.path("to-sign.gpg"));
        std::fs::write(&data_path, data)
            .with_context(|| format!("writing {}", data_path.display()))?;
        let _ = std::fs::remove_file(&signature_path);
        sign_with(
            &self.home.shell()?,
            &self.fingerprint,
            &data_path,
            &signature_path,
            "",
        )?;
        std::fs::read(&signature_path)
            .with_context(|| format!("reading {}", signature_path.display()))
    }

    /// Whether `signature` is a good signature of `data` by this key.
    pub fn check(&self, data: &[u8], signature: &[u8]) -> anyhow::Result<()> {
        verify_detached_bytes(&self.pubring, data, signature).map(drop)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }
}

/// Writes the public half of the armored private key to `keyring` (binary, like
/// `gpg --export`), for checking signatures made with it. Returns its fingerprint.
pub fn export_public_keyring_in(
    tmp: &Path,
    armored_private_key: &str,
    keyring: &Path,
) -> anyhow::Result<String> {
    let home = GpgHome::new_in(tmp)?;
    let sh = home.shell()?;
    let fingerprint = import_secret_key(&sh, armored_private_key)?;
    export_public(&sh, &fingerprint, keyring, armored_private_key)?;
    Ok(fingerprint)
}

/// Writes the public key `fingerprint` to `keyring` (binary).
fn export_public(
    sh: &Shell,
    fingerprint: &str,
    keyring: &Path,
    armored_private_key: &str,
) -> anyhow::Result<()> {
    let exported = run_gpg(
        sh,
        cmd!(
            sh,
            "gpg --batch --no-tty --yes --output {keyring} --export {fingerprint}"
        ),
    )?;
    checked(
        exported,
        |e| format!("gpg could not export the public key {fingerprint} of {SIGNING_KEY_ENV}: {e}"),
        armored_private_key,
    )?;
    Ok(())
}

/// [`verify_detached`] for a signature and data in memory (written to a private temporary
/// directory for gpgv, which reads files).
pub fn verify_detached_bytes(
    keyring: &Path,
    data: &[u8],
    signature: &[u8],
) -> anyhow::Result<String> {
    let work = crate::util::interrupt::temp_dir().context("creating a temporary directory")?;
    let (data_path, signature_path) = (work.path().join("data"), work.path().join("data.gpg"));
    std::fs::write(&data_path, data)
        .and_then(|()| std::fs::write(&signature_path, signature))
        .with_context(|| format!("writing into {}", work.path().display()))?;
    verify_detached(keyring, &data_path, &signature_path)
}

/// Checks that `signature` is a good detached signature of `data` by a key in `keyring` (binary
/// or armored public keys, like /etc/systemd/import-pubring.gpg). Returns the signer's fingerprint.
pub fn verify_detached(keyring: &Path, data: &Path, signature: &Path) -> anyhow::Result<String> {
    let home = GpgHome::new_in(&std::env::temp_dir())?;
    let sh = home.shell()?;
    let keyring_text =
        std::fs::read(keyring).with_context(|| format!("reading keyring {}", keyring.display()))?;
    let binary: PathBuf = home.path().join("keyring.gpg");
    if keyring_text.starts_with(b"-----BEGIN PGP") {
        let dearmored = run_gpg(
            &sh,
            cmd!(
                sh,
                "gpg --batch --no-tty --yes --dearmor --output {binary} {keyring}"
            ),
        )
        .context("running gpg (install it: apt-get install gnupg)")?;
        checked(
            dearmored,
            |e| format!("{} is not an OpenPGP keyring: {e}", keyring.display()),
            "",
        )?;
    } else {
        std::fs::copy(keyring, &binary)
            .with_context(|| format!("copying keyring {}", keyring.display()))?;
    }
    let homedir = home.path();
    let output = run_gpg(
        &sh,
        cmd!(
            sh,
            "gpgv --homedir {homedir} --status-fd 1 --keyring {binary} {signature} {data}"
        ),
    )
    .context("running gpgv (install it: apt-get install gpgv)")?;
    let status = String::from_utf8_lossy(&output.stdout);
    match valid_signature(&status) {
        Some(fingerprint) if output.status.success() => Ok(fingerprint),
        _ => bail!(
            "{} is not a good signature of {} by a key in {}: {}",
            signature.display(),
            data.display(),
            keyring.display(),
            redact(&output.stderr, "")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway ed25519 key without passphrase: (armored secret key, binary public keyring,
    /// armored public keyring).
    fn throwaway_key(dir: &Path, name: &str) -> (String, PathBuf, PathBuf) {
        let home = GpgHome::new_in(dir).unwrap();
        let sh = home.shell().unwrap();
        let uid = format!("{name} <{name}@alloy-sysext.invalid>");
        cmd!(
            sh,
            "gpg --batch --no-tty --passphrase '' --quick-gen-key {uid} ed25519 sign never"
        )
        .quiet()
        .ignore_stderr()
        .run()
        .expect("gpg generates a key (install gnupg: bash scripts/install-deps.sh --test)");
        let secret = cmd!(sh, "gpg --batch --armor --export-secret-keys")
            .quiet()
            .read()
            .unwrap();
        let public = dir.join(format!("{name}.gpg"));
        let armored = dir.join(format!("{name}.asc"));
        cmd!(sh, "gpg --batch --output {public} --export")
            .quiet()
            .run()
            .unwrap();
        cmd!(sh, "gpg --batch --armor --output {armored} --export")
            .quiet()
            .run()
            .unwrap();
        assert!(secret.contains(ARMORED_SECRET_KEY));
        (secret, public, armored)
    }

    fn sums(dir: &Path) -> PathBuf {
        let path = dir.join("SHA256SUMS");
        std::fs::write(
            &path,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  alloy-1.10.2-amd64.raw\n",
        )
        .unwrap();
        path
    }

    /// The lines of key material (not the armor header) that must never be shown.
    fn key_lines(secret: &str) -> Vec<&str> {
        secret
            .lines()
            .filter(|l| l.len() > 20 && !l.starts_with("-----"))
            .collect()
    }

    #[test]
    fn signs_so_that_gpgv_and_sysupdates_gpg_call_accept_it_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public, armored_public) = throwaway_key(dir.path(), "signer");
        let data = sums(dir.path());
        let signature = dir.path().join("SHA256SUMS.gpg");
        let tmp = tempfile::tempdir().unwrap();
        let signer = sign_detached_in(tmp.path(), &secret, &data, &signature).unwrap();

        // Binary (not armored) OpenPGP: a packet tag byte first.
        let bytes = std::fs::read(&signature).unwrap();
        assert!(
            bytes[0] & 0x80 != 0,
            "not a binary OpenPGP packet: {:?}",
            &bytes[..8]
        );
        // The private GNUPGHOME is gone.
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        // No leftover partial signature beside the output.
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["SHA256SUMS", "SHA256SUMS.gpg", "signer.asc", "signer.gpg"]
        );

        let by_binary = verify_detached(&public, &data, &signature).unwrap();
        let by_armored = verify_detached(&armored_public, &data, &signature).unwrap();
        assert_eq!(by_binary, by_armored);
        assert_eq!(by_binary, signer);
        assert_eq!(by_binary.len(), 40, "{by_binary}");

        // The public half, exported from the private key alone, checks it too.
        let exported = tmp.path().join("exported.gpg");
        assert_eq!(
            export_public_keyring_in(tmp.path(), &secret, &exported).unwrap(),
            signer
        );
        assert_eq!(
            verify_detached(&exported, &data, &signature).unwrap(),
            signer
        );
        std::fs::remove_file(&exported).unwrap();

        // The call systemd-sysupdate (import-common) makes against /etc/systemd/import-pubring.gpg.
        let home = GpgHome::new_in(dir.path()).unwrap();
        let sh = home.shell().unwrap();
        cmd!(sh, "gpg --no-options --no-default-keyring --no-auto-key-locate --no-auto-check-trustdb --batch --trust-model=always --keyring={public} --verify {signature} {data}")
            .quiet()
            .ignore_stderr()
            .run()
            .unwrap();
    }

    #[test]
    fn tampered_data_or_another_key_fails_verification() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public, _) = throwaway_key(dir.path(), "signer");
        let (_, other_public, _) = throwaway_key(dir.path(), "other");
        let data = sums(dir.path());
        let signature = dir.path().join("SHA256SUMS.gpg");
        sign_detached_in(dir.path(), &secret, &data, &signature).unwrap();

        let err = verify_detached(&other_public, &data, &signature)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a good signature"), "{err}");
        assert!(err.contains("other.gpg"), "{err}");

        std::fs::write(&data, "tampered\n").unwrap();
        let err = verify_detached(&public, &data, &signature)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not a good signature"), "{err}");
    }

    #[test]
    fn failures_never_show_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, _, _) = throwaway_key(dir.path(), "signer");
        let signature = dir.path().join("SHA256SUMS.gpg");

        // Nothing to sign.
        let err = format!(
            "{:#}",
            sign_detached_in(dir.path(), &secret, &dir.path().join("missing"), &signature)
                .unwrap_err()
        );
        assert!(err.contains("missing"), "{err}");
        // A corrupt key: gpg refuses it.
        let mut lines: Vec<&str> = secret.lines().collect();
        let middle = lines.len() / 2;
        lines.remove(middle);
        let corrupt = lines.join("\n");
        let data = sums(dir.path());
        let corrupt_err = format!(
            "{:#}",
            sign_detached_in(dir.path(), &corrupt, &data, &signature).unwrap_err()
        );
        assert!(corrupt_err.contains("could not import"), "{corrupt_err}");
        // Not a key at all.
        let not_a_key = "hunter2-super-secret-token";
        let text_err = format!(
            "{:#}",
            sign_detached_in(dir.path(), not_a_key, &data, &signature).unwrap_err()
        );
        assert!(text_err.contains(SIGNING_KEY_ENV), "{text_err}");
        assert!(!text_err.contains(not_a_key), "{text_err}");

        for err in [&err, &corrupt_err] {
            for line in key_lines(&secret) {
                assert!(!err.contains(line), "key material in error: {err}");
            }
        }
        assert!(!signature.exists());
    }

    /// Sets `path`'s modification time `seconds` into the past.
    fn age(path: &Path, seconds: u64) {
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(seconds);
        std::fs::File::open(path)
            .unwrap()
            .set_modified(past)
            .unwrap();
    }

    #[test]
    fn a_home_left_by_a_killed_run_is_removed_with_its_agent_by_the_next_one() {
        let base = tempfile::tempdir().unwrap();
        let keys = tempfile::tempdir().unwrap();
        let (secret, _, _) = throwaway_key(keys.path(), "killed");
        // What a SIGKILLed publish leaves: the key imported, the agent running, no lock.
        let stale = base.path().join(format!("{HOME_PREFIX}stale"));
        std::fs::create_dir(&stale).unwrap();
        let sh = Shell::new().unwrap();
        sh.set_var("GNUPGHOME", &stale);
        import_secret_key(&sh, &secret).unwrap();
        let agent_of = |home: &Path| interrupt::processes_with_env("GNUPGHOME", home);
        assert!(
            !agent_of(&stale).is_empty(),
            "no agent started for the import"
        );
        age(&stale, 3600);
        // A live run's home, just as old but locked (by another process): kept.
        let live = base.path().join(format!("{HOME_PREFIX}live"));
        std::fs::create_dir(&live).unwrap();
        let ready = base.path().join("locked");
        let mut holder = std::process::Command::new("sh")
            .arg("-c")
            .arg("exec 9<\"$0\" && flock --exclusive 9 && touch \"$1\" && exec sleep 60")
            .arg(&live)
            .arg(&ready)
            .spawn()
            .unwrap();
        while !ready.exists() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        std::fs::remove_file(&ready).unwrap();
        age(&live, 3600);
        // A home just made, not yet locked: kept (too young to judge).
        let young = base.path().join(format!("{HOME_PREFIX}young"));
        std::fs::create_dir(&young).unwrap();

        let home = GpgHome::new_in(base.path()).unwrap();
        holder.kill().unwrap();
        holder.wait().unwrap();
        assert!(!stale.exists());
        assert!(
            agent_of(&stale).is_empty(),
            "the killed run's agent still runs"
        );
        assert!(live.exists());
        assert!(young.exists());
        assert!(home.path().exists());
    }

    #[test]
    fn reads_gpg_colon_listings_and_status_lines() {
        let colons = "sec:u:255:22:AAAA:1700000000:::u:::scSC:::+:::ed25519:::0:\nfpr:::::::::0123456789ABCDEF0123456789ABCDEF01234567:\ngrp:::::::::X:\nuid:u::::1700000000::H::t <t@x>::::::::::0:\nssb:u:255:18:BBBB:1700000000::::::e:::+:::cv25519::\nfpr:::::::::FFFF456789ABCDEF0123456789ABCDEF0123FFFF:\n";
        assert_eq!(
            secret_key_fingerprints(colons),
            ["0123456789ABCDEF0123456789ABCDEF01234567"]
        );
        assert!(secret_key_fingerprints("").is_empty());
        let status = "[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG AAAA t <t@x>\n[GNUPG:] VALIDSIG 0123456789ABCDEF0123456789ABCDEF01234567 2026-11-29 1700000000 0 4 0 22 8 00 0123456789ABCDEF0123456789ABCDEF01234567\n";
        assert_eq!(
            valid_signature(status).as_deref(),
            Some("0123456789ABCDEF0123456789ABCDEF01234567")
        );
        assert_eq!(valid_signature("[GNUPG:] BADSIG AAAA t <t@x>\n"), None);
    }

    #[test]
    fn redaction_drops_lines_found_in_the_secret() {
        assert_eq!(
            redact(
                b"gpg: line one\nABCDEFGHIJKLMNOP\n",
                "xx ABCDEFGHIJKLMNOP yy"
            ),
            "gpg: line one"
        );
    }
}
