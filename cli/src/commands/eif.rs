//! `trustbridge eif build | measure`: the sentinel's Nitro Enclave Image File, built
//! reproducibly without Docker or nitro-cli, and the PCRs of any EIF.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use trustbridge_eif::{Measurements, SentinelImage, Signer};

use crate::output_file::write_output;

/// nitro-cli's blob directory (kernel, init, nsm.ko, cmdline), used for inputs not given.
const BLOBS: &str = "/usr/share/nitro_enclaves/blobs";

/// Largest input file read (kernel, init, nsm.ko, sentinel).
const MAX_INPUT: u64 = 1 << 30;
/// Largest configuration or command line read.
const MAX_SMALL_INPUT: u64 = 1 << 20;

/// Build or measure Nitro Enclave Image Files.
#[derive(Debug, clap::Args)]
pub(crate) struct EifArgs {
    #[command(subcommand)]
    command: EifCommand,
}

#[derive(Debug, clap::Subcommand)]
enum EifCommand {
    Build(BuildArgs),
    Measure(MeasureArgs),
}

/// Build the sentinel's enclave image and print its PCRs.
///
/// The image holds AWS's bootstrap ramdisk (init, nsm.ko: PCR1 with the kernel and the
/// command line) and an application ramdisk (PCR2) with the static sentinel at
/// /bin/tb-sentinel and the configuration at /etc/trustbridge/sentinel.toml, which must
/// pin the broker (kms_key) and should pin the provider (provider_key). The build is
/// reproducible: the same inputs give the same bytes (set SOURCE_DATE_EPOCH to fix the
/// metadata's build time; it is not measured). Kernel, init, nsm.ko and the command line
/// default to nitro-cli's blobs in /usr/share/nitro_enclaves/blobs/.
#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// The sentinel: a static executable (x86_64-unknown-linux-musl; see docs/EIF.md).
    #[arg(long, value_name = "BIN")]
    sentinel: PathBuf,
    /// The sentinel's configuration file (TOML, as `tb-sentinel --config`).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The enclave kernel (nitro-cli's blobs/bzImage).
    #[arg(long, value_name = "FILE")]
    kernel: Option<PathBuf>,
    /// AWS's enclave init (nitro-cli's blobs/init).
    #[arg(long, value_name = "FILE")]
    init: Option<PathBuf>,
    /// The NSM driver built for that kernel (nitro-cli's blobs/nsm.ko).
    #[arg(long = "nsm-ko", value_name = "FILE")]
    nsm_ko: Option<PathBuf>,
    /// The kernel command line (nitro-cli's blobs/cmdline; AWS's default when absent).
    #[arg(long, value_name = "FILE")]
    cmdline: Option<PathBuf>,
    /// Sign the image (PCR8): the signing certificate, PEM, ECDSA P-384.
    #[arg(long, value_name = "PEM", requires = "signing_key")]
    signing_cert: Option<PathBuf>,
    /// The certificate's private key, PEM (PKCS#8 or SEC1).
    #[arg(long, value_name = "PEM", requires = "signing_cert")]
    signing_key: Option<PathBuf>,
    /// Where to write the image.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
    /// Print the PCRs as JSON (nitro-cli's shape).
    #[arg(long)]
    json: bool,
}

/// Print an EIF's PCR0, PCR1, PCR2 (and PCR8 when signed), computed from the file.
///
/// The file's CRC and section table are checked, and a signature must verify under its
/// certificate (which must be valid now) before PCR8 is printed. Exit 1 on any failure.
#[derive(Debug, clap::Args)]
struct MeasureArgs {
    /// The image.
    eif: PathBuf,
    /// JSON output (nitro-cli's shape: {"Measurements": {"PCR0": ...}}).
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: EifArgs) -> Result<()> {
    match args.command {
        EifCommand::Build(a) => build(a),
        EifCommand::Measure(a) => measure(a),
    }
}

fn read_capped(path: &Path, cap: u64, what: &str) -> Result<Vec<u8>> {
    let len = std::fs::metadata(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?
        .len();
    if len > cap {
        bail!("{what} {} is larger than {cap} bytes", path.display());
    }
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// The given input, else nitro-cli's blob of that name, else a message saying what is
/// needed and where it comes from.
fn input(given: Option<&PathBuf>, blob: &str, flag: &str, what: &str) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.clone());
    }
    let default = Path::new(BLOBS).join(blob);
    if default.is_file() {
        return Ok(default);
    }
    bail!(
        "{flag} is needed ({what}): nitro-cli's blobs are not in {BLOBS}. Install \
         aws-nitro-enclaves-cli (its blobs package ships bzImage, init and nsm.ko), or build \
         them from github.com/aws/aws-nitro-enclaves-sdk-bootstrap, and pass {flag}"
    )
}

/// What the image's configuration must hold: an enclave takes its configuration from this
/// file alone (its environment is empty), so the keys the sentinel pins must be here and
/// valid, and it must attest with the NSM. The sentinel's own parser stays authoritative
/// for everything else (it refuses unknown keys at start).
fn check_config(config: &[u8], path: &Path) -> Result<()> {
    let text = std::str::from_utf8(config)
        .with_context(|| format!("{} is not UTF-8 TOML", path.display()))?;
    let table: toml::Table =
        toml::from_str(text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let get = |key: &str| table.get(key).and_then(toml::Value::as_str);
    let key = get("kms_key").with_context(|| {
        format!(
            "{} pins no broker (kms_key): a sentinel without it would take a model key from \
             any broker the host points it at",
            path.display()
        )
    })?;
    key.parse::<trustbridge_protocol::key_release::BrokerKey>()
        .map_err(|e| anyhow::anyhow!("{}: kms_key: {e}", path.display()))?;
    let provider = get("provider_key").with_context(|| {
        format!(
            "{} pins no provider (provider_key): the image would load any model the broker \
             releases to it",
            path.display()
        )
    })?;
    provider
        .parse::<trustbridge_protocol::bundle::ProviderPublicKey>()
        .map_err(|e| anyhow::anyhow!("{}: provider_key: {e}", path.display()))?;
    for required in ["kms_url", "asset_id", "contract_id"] {
        if get(required).is_none_or(str::is_empty) {
            bail!(
                "{} has no {required}: the sentinel cannot start without it, and an enclave \
                 has no other source for it",
                path.display()
            );
        }
    }
    if table.contains_key("sim_ca") || table.contains_key("sim_platform") {
        bail!(
            "{} configures the simulated TEE: an enclave image must attest with the NSM",
            path.display()
        );
    }
    if let Some(tee) = table.get("tee")
        && !matches!(tee.as_str(), Some("auto" | "nitro"))
    {
        bail!(
            "{}: tee = {tee}: an enclave image attests with the NSM (\"nitro\" or \"auto\")",
            path.display()
        );
    }
    Ok(())
}

/// SOURCE_DATE_EPOCH, else 0: a reproducible build by default.
fn build_time() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        Err(_) => Ok(0),
    }
}

fn print(m: &Measurements, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&m.to_json())?)?;
    } else {
        write!(out, "{}", m.to_text())?;
    }
    Ok(())
}

fn build(a: BuildArgs) -> Result<()> {
    let sentinel = read_capped(&a.sentinel, MAX_INPUT, "the sentinel")?;
    let arch = trustbridge_eif::elf::static_executable_arch(&sentinel)
        .with_context(|| format!("{} cannot run in an enclave", a.sentinel.display()))?;
    // Kernel, init and nsm.ko belong together (the module is built for the kernel): all
    // given, or all nitro-cli's.
    let given = [&a.kernel, &a.init, &a.nsm_ko]
        .iter()
        .filter(|p| p.is_some())
        .count();
    if given != 0 && given != 3 {
        bail!(
            "pass --kernel, --init and --nsm-ko together (nsm.ko must be built for that kernel), \
             or none of them for nitro-cli's blobs in {BLOBS}"
        );
    }
    let kernel_blob = match arch {
        trustbridge_eif::Arch::X86_64 => "bzImage",
        trustbridge_eif::Arch::Aarch64 => "Image",
    };
    let kernel = input(
        a.kernel.as_ref(),
        kernel_blob,
        "--kernel",
        "the enclave kernel",
    )?;
    let init = input(a.init.as_ref(), "init", "--init", "AWS's enclave init")?;
    let nsm = input(a.nsm_ko.as_ref(), "nsm.ko", "--nsm-ko", "the NSM driver")?;
    let cmdline_path = a.cmdline.clone().or_else(|| {
        let p = Path::new(BLOBS).join("cmdline");
        (given == 0 && p.is_file()).then_some(p)
    });
    let config = read_capped(&a.config, MAX_SMALL_INPUT, "the configuration")?;
    check_config(&config, &a.config)?;
    let kernel = read_capped(&kernel, MAX_INPUT, "the kernel")?;
    let init = read_capped(&init, MAX_INPUT, "init")?;
    let nsm = read_capped(&nsm, MAX_INPUT, "nsm.ko")?;
    let cmdline = match &cmdline_path {
        Some(p) => Some(
            String::from_utf8(read_capped(p, MAX_SMALL_INPUT, "the command line")?)
                .with_context(|| format!("{} is not UTF-8", p.display()))?,
        ),
        None => None,
    };
    let signer = match (&a.signing_cert, &a.signing_key) {
        (Some(cert), Some(key)) => Some(
            Signer::from_pem(
                &read_capped(cert, MAX_SMALL_INPUT, "the signing certificate")?,
                &read_capped(key, MAX_SMALL_INPUT, "the signing key")?,
                SystemTime::now(),
            )
            .context("cannot sign with this certificate and key")?,
        ),
        _ => None,
    };
    let image = SentinelImage {
        sentinel: &sentinel,
        config: &config,
        kernel: &kernel,
        init: &init,
        nsm_ko: &nsm,
        cmdline: cmdline.as_deref(),
        build_time: build_time()?,
    }
    .image()
    .with_context(|| format!("cannot build an image of {}", a.sentinel.display()))?;
    let (bytes, measurements) = image.write(signer.as_ref())?;
    write_output(&a.out, a.force, 0o644, |f| {
        f.write_all(&bytes)
            .with_context(|| format!("cannot write {}", a.out.display()))
    })?;
    eprintln!(
        "wrote {} ({} bytes, {}{})",
        a.out.display(),
        bytes.len(),
        if arch == trustbridge_eif::Arch::Aarch64 {
            "aarch64"
        } else {
            "x86_64"
        },
        if signer.is_some() { ", signed" } else { "" }
    );
    print(&measurements, a.json)
}

fn measure(a: MeasureArgs) -> Result<()> {
    let file =
        std::fs::File::open(&a.eif).with_context(|| format!("cannot read {}", a.eif.display()))?;
    let len = file.metadata()?.len();
    let measured = trustbridge_eif::measure(std::io::BufReader::new(file), len, SystemTime::now())
        .with_context(|| format!("{} cannot be measured", a.eif.display()))?;
    if let Some(signer) = &measured.signer {
        eprintln!(
            "signed by {}: the signature verifies",
            signer.escape_debug()
        );
    }
    print(&measured.measurements, a.json)
}
