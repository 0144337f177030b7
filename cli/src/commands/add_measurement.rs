//! `trustbridge policy add-measurement --from-eif`: an image's PCRs become an accepted
//! Nitro measurement set of a broker policy (`[[asset.nitro]]` of one asset) or a client
//! policy (`[[nitro]]`). Existing sets stay, so old and new builds are both accepted
//! during a rolling deploy; the file keeps its comments and layout (the set is inserted as
//! text), and the result is parsed again and must contain the set before it replaces the
//! file.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use trustbridge_eif::Measurements;
use trustbridge_kms::policy::Policy;
use trustbridge_verifier::client_policy::ClientPolicy;
use trustbridge_verifier::reference_values::NitroSet;

use crate::output_file::write_output;

/// Accept an enclave image's measurements (PCR0, PCR1, PCR2, and PCR8 when signed) in a
/// policy, beside the sets it already accepts.
///
/// A broker policy gets an `[[asset.nitro]]` set under the asset (--asset when it has
/// several); a client policy (`trustbridge proxy --policy`) gets a `[[nitro]]` set. The
/// image is measured (and its signature verified) as `trustbridge eif measure` does. An
/// identical set already present leaves the file unchanged.
#[derive(Debug, clap::Args)]
pub(crate) struct AddMeasurementArgs {
    /// The policy TOML (broker or client), edited in place.
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The enclave image whose measurements to accept.
    #[arg(long, value_name = "EIF")]
    from_eif: PathBuf,
    /// The asset (broker policy with several assets).
    #[arg(long, value_name = "ID")]
    asset: Option<String>,
}

/// The PCRs of `m` as listed by [`NitroSet::pcrs`].
fn expected(m: &Measurements) -> Vec<(u8, Vec<u8>)> {
    let mut v = vec![
        (0, m.pcr0.to_vec()),
        (1, m.pcr1.to_vec()),
        (2, m.pcr2.to_vec()),
    ];
    if let Some(p) = m.pcr8 {
        v.push((8, p.to_vec()));
    }
    v
}

fn has_set(sets: &[NitroSet], m: &Measurements) -> bool {
    let want = expected(m);
    sets.iter().any(|s| {
        s.pcrs()
            .into_iter()
            .map(|(i, v)| (i, v.to_vec()))
            .collect::<Vec<_>>()
            == want
    })
}

fn block(table: &str, m: &Measurements, source: &str) -> String {
    let mut s = format!("[[{table}]]\n# {source} (trustbridge eif measure)\n");
    for (i, v) in expected(m) {
        s.push_str(&format!("pcr{i} = \"{}\"\n", hex::encode(v)));
    }
    s
}

/// A table header line's name (`[[asset]]` → `asset`, `[asset.nitro]` → `asset.nitro`).
fn header_name(line: &str) -> Option<&str> {
    let t = line.trim();
    let t = t.split('#').next()?.trim();
    let inner = t.strip_prefix("[[").and_then(|r| r.strip_suffix("]]"));
    let inner = inner.or_else(|| t.strip_prefix('[').and_then(|r| r.strip_suffix(']')));
    inner.map(str::trim)
}

/// Inserts `text` at the end of the `[[asset]]` table whose index among the assets is
/// `index` (after its sub-tables, before the next table that is not one of them).
fn insert_in_asset(policy: &str, index: usize, text: &str) -> String {
    let lines: Vec<&str> = policy.split_inclusive('\n').collect();
    let mut seen = 0usize;
    let mut inside = false;
    let mut at = lines.len();
    for (n, line) in lines.iter().enumerate() {
        let Some(name) = header_name(line) else {
            continue;
        };
        if name == "asset" {
            if inside {
                at = n;
                break;
            }
            inside = seen == index;
            seen += 1;
        } else if inside && !name.starts_with("asset.") {
            at = n;
            break;
        }
    }
    let mut out: String = lines[..at].concat();
    if !out.ends_with('\n') && !out.is_empty() {
        out.push('\n');
    }
    out.push('\n');
    out.push_str(text);
    if at < lines.len() {
        out.push('\n');
        out.push_str(&lines[at..].concat());
    }
    out
}

pub(crate) fn run(a: AddMeasurementArgs) -> Result<()> {
    let file = std::fs::File::open(&a.from_eif)
        .with_context(|| format!("cannot read {}", a.from_eif.display()))?;
    let len = file.metadata()?.len();
    let m = trustbridge_eif::measure(std::io::BufReader::new(file), len, SystemTime::now())
        .with_context(|| format!("{} cannot be measured", a.from_eif.display()))?
        .measurements;
    let text = std::fs::read_to_string(&a.policy)
        .with_context(|| format!("cannot read {}", a.policy.display()))?;
    // The image's file name goes into a comment: only characters that cannot end it.
    let source: String = a
        .from_eif
        .file_name()
        .map_or_else(
            || "an image".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        )
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    // Edit the file a symbolic link points at, not the link.
    let policy_path = std::fs::canonicalize(&a.policy)
        .with_context(|| format!("cannot read {}", a.policy.display()))?;
    // Which kind of policy, from its shape: a policy that accepts nothing yet does not
    // pass its own parser, and gets its first set here.
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("{} is not valid TOML", a.policy.display()))?;
    let count =
        |sets: Option<&toml::Value>| sets.and_then(toml::Value::as_array).map_or(0, Vec::len);
    let updated = if let Some(assets) = table.get("asset").and_then(toml::Value::as_array) {
        let ids: Vec<&str> = assets
            .iter()
            .map(|x| {
                x.get("id")
                    .and_then(toml::Value::as_str)
                    .unwrap_or_default()
            })
            .collect();
        let index = match &a.asset {
            Some(id) => ids
                .iter()
                .position(|x| x == id)
                .with_context(|| format!("{} has no asset {id:?}", a.policy.display()))?,
            None if ids.len() == 1 => 0,
            None => bail!(
                "{} has {} assets: name one with --asset ({})",
                a.policy.display(),
                ids.len(),
                ids.join(", ")
            ),
        };
        let id = ids[index];
        let before = count(assets[index].get("nitro"));
        if let Ok(policy) = Policy::from_toml(&text)
            && policy.asset(id).is_some_and(|x| has_set(&x.nitro, &m))
        {
            eprintln!(
                "{} already accepts these measurements for {id}: unchanged",
                a.policy.display()
            );
            return Ok(());
        }
        let updated = insert_in_asset(&text, index, &block("asset.nitro", &m, &source));
        let reparsed = Policy::from_toml(&updated).context(
            "the policy with the new set does not parse (see the error); nothing was changed",
        )?;
        if !reparsed
            .asset(id)
            .is_some_and(|x| has_set(&x.nitro, &m) && x.nitro.len() == before + 1)
        {
            bail!(
                "could not place the set under asset {id} in {}; add it by hand:\n{}",
                a.policy.display(),
                block("asset.nitro", &m, &source)
            );
        }
        eprintln!(
            "{}: asset {id} now accepts {} Nitro measurement set(s)",
            a.policy.display(),
            before + 1
        );
        updated
    } else if table.contains_key("broker_key") {
        if a.asset.is_some() {
            bail!(
                "--asset applies to a broker policy; {} is a client policy",
                a.policy.display()
            );
        }
        if ClientPolicy::from_toml(&text).is_ok_and(|c| has_set(&c.nitro, &m)) {
            eprintln!(
                "{} already accepts these measurements: unchanged",
                a.policy.display()
            );
            return Ok(());
        }
        let before = count(table.get("nitro"));
        let mut updated = text.clone();
        if !updated.is_empty() && !updated.ends_with('\n') {
            updated.push('\n');
        }
        updated.push('\n');
        updated.push_str(&block("nitro", &m, &source));
        let reparsed = ClientPolicy::from_toml(&updated).context(
            "the policy with the new set does not parse (see the error); nothing was changed",
        )?;
        if !has_set(&reparsed.nitro, &m) || reparsed.nitro.len() != before + 1 {
            bail!("could not add the set to {}", a.policy.display());
        }
        eprintln!(
            "{}: now accepts {} Nitro measurement set(s)",
            a.policy.display(),
            before + 1
        );
        updated
    } else {
        bail!(
            "{} is neither a broker policy ([[asset]] tables) nor a client policy (broker_key)",
            a.policy.display()
        );
    };
    let mode = std::fs::metadata(&policy_path)?.permissions().mode() & 0o7777;
    write_output(&policy_path, true, mode, |f| {
        std::io::Write::write_all(f, updated.as_bytes())
            .with_context(|| format!("cannot write {}", a.policy.display()))
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_set_lands_under_its_asset() {
        let policy = "[admin]\nkeys = []\n\n[[asset]]\nid = \"a\"\n\n  [[asset.nitro]]\n  pcr0 = \"00\"\n\n[[asset]]\nid = \"b\"\n\n[[contract]]\nid = \"c\"\n";
        let out = insert_in_asset(policy, 0, "[[asset.nitro]]\npcr0 = \"01\"\n");
        let a = out.find("id = \"a\"").unwrap();
        let new = out.find("pcr0 = \"01\"").unwrap();
        let b = out.find("id = \"b\"").unwrap();
        assert!(a < new && new < b, "{out}");
        let out = insert_in_asset(policy, 1, "[[asset.nitro]]\npcr0 = \"02\"\n");
        let b = out.find("id = \"b\"").unwrap();
        let new = out.find("pcr0 = \"02\"").unwrap();
        let c = out.find("[[contract]]").unwrap();
        assert!(b < new && new < c, "{out}");
        assert_eq!(header_name("  [[asset.nitro]] # x"), Some("asset.nitro"));
        assert_eq!(header_name("pcr0 = \"[x]\""), None);
    }
}
