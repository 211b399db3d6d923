//! `SHA256SUMS.gpg`: kept a good signature of the index as the bucket holds it.

use anyhow::bail;
use xtask::contract::{INDEX_NAME, SIGNATURE_NAME};
use xtask::signing::Signer;
use xtask::util::checksums;
use xtask::util::progress::{detail, step};

use crate::bucket::{self, Bucket, Contention, Precondition, Written, CONDITIONAL_ATTEMPTS};
use xtask::contract::{INDEX_LIMIT, SIGNATURE_LIMIT};

/// What happened to the signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signed {
    Uploaded,
    AlreadyValid,
}

impl Signed {
    pub fn describe(self) -> &'static str {
        match self {
            Signed::Uploaded => "signed and uploaded",
            Signed::AlreadyValid => "already a valid signature of it",
        }
    }
}

/// Makes `SHA256SUMS.gpg` a good signature of `SHA256SUMS` as the bucket holds it when we are
/// done: sign the bytes read from the bucket, upload, then read both again and check. Another
/// publisher's change to the index in between means signing again; a missing, wrong or stale
/// signature is replaced.
pub async fn sign_index(bucket: &Bucket, signer: &Signer, verbose: bool) -> anyhow::Result<Signed> {
    let mut contention = Contention::new();
    let mut uploaded = false;
    let mut why = String::new();
    for attempt in 1..=CONDITIONAL_ATTEMPTS {
        let Some((index, _)) = bucket.get_bytes(INDEX_NAME, INDEX_LIMIT).await? else {
            bail!(
                "{} vanished before it could be signed; run publish again",
                bucket.url(INDEX_NAME)
            );
        };
        let precondition = match bucket.get_bytes(SIGNATURE_NAME, SIGNATURE_LIMIT).await? {
            Some((signature, etag)) => match signer.check(&index, &signature) {
                Ok(()) => {
                    detail(format!(
                        "{SIGNATURE_NAME}: a good signature of {INDEX_NAME} by {}",
                        signer.fingerprint()
                    ));
                    return Ok(if uploaded {
                        Signed::Uploaded
                    } else {
                        Signed::AlreadyValid
                    });
                }
                Err(e) => {
                    why = format!("{e:#}");
                    detail(if uploaded {
                        format!("{INDEX_NAME} changed after we signed it (another publisher?): signing it again")
                    } else {
                        format!("{SIGNATURE_NAME} does not match {INDEX_NAME}: signing it")
                    });
                    Precondition::Matches(etag)
                }
            },
            None => {
                why = format!("no {SIGNATURE_NAME}");
                Precondition::Absent
            }
        };
        step(format!(
            "Signing {INDEX_NAME} with key {} (attempt {attempt} of {CONDITIONAL_ATTEMPTS})",
            signer.fingerprint()
        ));
        let signature = signer.sign(&index)?;
        let digest = checksums::hash_bytes(&signature);
        if verbose {
            let header = precondition.header();
            detail(format!("PUT {} ({header})", bucket.key(SIGNATURE_NAME)));
        }
        match bucket
            .put(
                SIGNATURE_NAME,
                signature.into(),
                &digest,
                bucket::SIGNATURE,
                &precondition,
            )
            .await?
        {
            // Checked on the next turn, against the index as it is then.
            Written::Done => uploaded = true,
            Written::PreconditionFailed => {
                contention.wait(SIGNATURE_NAME, "checking", attempt).await;
            }
        }
    }
    bail!(
        "{SIGNATURE_NAME} still does not match {INDEX_NAME} after {CONDITIONAL_ATTEMPTS} attempts ({why}); run publish again to sign it"
    )
}
