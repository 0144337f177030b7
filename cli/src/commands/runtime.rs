//! `trustbridge runtime`: the built-in engine as an external runtime, the confidential
//! GPU VM path without a GPU.
//!
//! On a confidential GPU VM the sentinel decrypts the model to tmpfs (or FIFOs) and
//! proxies the API requests to a runtime on the loopback (vLLM's OpenAI server in
//! production, `--engine runtime`). This command stands where vLLM stands: it reads the
//! files the sentinel wrote, loads them into the same engine the sentinel has built in,
//! and serves the OpenAI API on a loopback address.

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::io::Read;
use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use trustbridge_enclave::engine::builtin::BuiltInLimits;
use trustbridge_enclave::engine::openai::MAX_BODY;
use trustbridge_enclave::engine::{ApiRequest, BuiltIn, Engine};
use trustbridge_enclave::memory::PlainBuffer;
use trustbridge_logging::{DEFAULT_DRAIN_SECS, serve_until_stopped, stop_signals};
use trustbridge_transport::{Endpoint, Listener};
use zeroize::Zeroizing;

/// Serve the built-in engine as an external runtime: the OpenAI API (/v1/models,
/// /v1/chat/completions, /v1/embeddings) on a loopback address, for a sentinel in
/// runtime-proxy mode (`tb-sentinel --engine runtime --model-output tmpfs:DIR`).
///
/// Reads every file under --model-dir (regular files, or the FIFOs of `--model-output
/// fifo:DIR`) into locked, zeroized memory: the model's `.gguf` file is its chat model,
/// a folder with model.safetensors, tokenizer.json and config.json its embeddings model.
/// Start it once the sentinel's ready signal (TB_READY_SIGNAL) exists; stop it when the
/// signal goes.
#[derive(Debug, clap::Args)]
pub(crate) struct RuntimeArgs {
    /// The folder the sentinel decrypted the model into.
    #[arg(long, value_name = "DIR")]
    model_dir: PathBuf,
    /// Where to serve: a loopback address, or `unix:///ABSOLUTE/PATH`, a Unix socket (mode
    /// 0600: run the runtime as the sentinel's user). The runtime sees plaintext prompts;
    /// only the sentinel beside it may reach it, which the socket's permissions enforce
    /// and a loopback port does not (any process in the VM may connect to it).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8081", value_parser = listen_endpoint)]
    listen: Endpoint,
    /// The model id requests must name: the asset id, as the sentinel serves it.
    #[arg(long, value_name = "ID", env = "TB_ASSET_ID")]
    model_id: String,
    /// Requests computed at once (each uses every core).
    #[arg(long, default_value = "1")]
    workers: NonZeroUsize,
    /// Requests waiting their turn; beyond it, 429.
    #[arg(long, default_value_t = 32)]
    queue: usize,
    /// Seconds one request may take, waiting included (then 504).
    #[arg(long, value_name = "SECS", default_value = "300")]
    request_timeout_secs: NonZeroU64,
    /// At SIGINT or SIGTERM: seconds the requests in flight may take to finish before the
    /// runtime stops anyway, with an error status (a second signal stops it at once). New
    /// requests are refused from the first signal.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_DRAIN_SECS)]
    drain_secs: NonZeroU64,
}

/// `--listen`: a loopback `IP:PORT`, or `unix:///ABSOLUTE/PATH`.
fn listen_endpoint(s: &str) -> Result<Endpoint, String> {
    if let Some(path) = s.strip_prefix("unix://") {
        if !path.starts_with('/') {
            return Err(format!(
                "{s}: a Unix socket needs an absolute path, unix:///PATH"
            ));
        }
        return Ok(Endpoint::Unix(path.into()));
    }
    let addr: SocketAddr = s
        .parse()
        .map_err(|_| format!("{s}: neither IP:PORT nor unix:///PATH"))?;
    if !addr.ip().is_loopback() {
        return Err(format!(
            "{s}: the runtime sees plaintext prompts and answers; it must listen on the \
             loopback (127.0.0.1 or [::1]) or a Unix socket, where only the sentinel beside \
             it reaches it"
        ));
    }
    Ok(Endpoint::Tcp {
        host: match addr.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip @ std::net::IpAddr::V4(_) => ip.to_string(),
        },
        port: addr.port(),
    })
}

pub(crate) fn run(args: RuntimeArgs) -> Result<()> {
    trustbridge_enclave::memory::forbid_core_dumps()
        .context("cannot forbid core dumps (they would write the model to disk)")?;
    let files = read_model(&args.model_dir)?;
    let engine = BuiltIn::load(
        &args.model_id,
        &files,
        BuiltInLimits {
            workers: args.workers.get(),
            max_queued: args.queue,
        },
    )
    .with_context(|| format!("cannot load the model in {}", args.model_dir.display()))?;
    drop(files);
    tracing::info!(?engine, "model loaded");
    let timeout = Duration::from_secs(args.request_timeout_secs.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let drain = Duration::from_secs(args.drain_secs.get());
    let result = runtime.block_on(async move {
        let stop = stop_signals().context("cannot catch SIGINT and SIGTERM")?;
        let listener = Listener::bind(&args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let url = match &args.listen {
            Endpoint::Tcp { host, port } => format!("http://{host}:{port}"),
            other => other.to_string(),
        };
        eprintln!(
            "trustbridge runtime: serving {} from {} on {url}",
            args.model_id,
            args.model_dir.display(),
        );
        let app = axum::Router::new()
            .route("/health", axum::routing::get(|| async { "ok" }))
            .fallback(answer)
            .with_state((Arc::new(engine), timeout));
        // Requests in flight get --drain-secs to finish; a drain cut short is an error.
        serve_until_stopped(stop, drain, |stop_taking| {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop_taking)
                .into_future()
        })
        .await?
        .context("serving the runtime")
    });
    // Blocking work still running after a cut drain (a generation an engine worker is computing)
    // does not hold the exit up for long.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// One API request for the engine.
async fn answer(
    State((engine, timeout)): State<(Arc<BuiltIn>, Duration)>,
    request: Request,
) -> Response {
    let deadline = tokio::time::Instant::now() + timeout;
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return (
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "the request is too large",
        )
            .into_response();
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
    let answer = engine
        .answer(ApiRequest {
            method: parts.method.as_str().as_bytes().to_vec(),
            path: path.into_bytes(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
            body: body.to_vec(),
            deadline,
        })
        .await;
    let mut response = Response::builder().status(answer.status);
    for (name, value) in &answer.headers {
        response = response.header(name.as_slice(), value.as_slice());
    }
    // A cut answer breaks the connection off: the sentinel sees the stream fail (and its
    // receipt records a 502 or 504), never a clean end.
    let body = answer.body.map(|piece| {
        piece.map_err(|cut| std::io::Error::other(format!("answer cut ({})", cut.status)))
    });
    response.body(Body::from_stream(body)).unwrap_or_else(|e| {
        tracing::error!(error = %e, "an answer the engine built is not valid HTTP");
        axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response()
    })
}

/// Every file under `dir` (bundle paths relative to it), read into locked memory.
fn read_model(dir: &Path) -> Result<BTreeMap<String, PlainBuffer>> {
    let mut files = BTreeMap::new();
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
    {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let kind = entry.file_type();
        if !(kind.is_file() || kind.is_fifo()) {
            continue;
        }
        let relative = entry
            .path()
            .strip_prefix(dir)
            .context("a file outside the model folder")?
            .to_str()
            .with_context(|| format!("{} is not a UTF-8 path", entry.path().display()))?
            .to_owned();
        let file = std::fs::File::open(entry.path())
            .with_context(|| format!("cannot open {}", entry.path().display()))?;
        let plain =
            read_whole(file).with_context(|| format!("cannot read {}", entry.path().display()))?;
        if let Err(e) = plain.lock() {
            tracing::warn!(path = %relative, error = %e, "cannot lock the model in memory");
        }
        files.insert(relative, plain);
    }
    if files.is_empty() {
        bail!(
            "{} holds no model files (is the sentinel Ready, with --model-output tmpfs:{}?)",
            dir.display(),
            dir.display()
        );
    }
    Ok(files)
}

/// All of `file` in one buffer, with no plaintext left behind in freed memory: a regular
/// file straight into a buffer of its size; a FIFO (whose size is known only at its end)
/// in fixed pieces, each zeroized once copied.
fn read_whole(mut file: std::fs::File) -> std::io::Result<PlainBuffer> {
    const PIECE: usize = 8 << 20;
    let meta = file.metadata()?;
    if meta.is_file() {
        let len = usize::try_from(meta.len()).map_err(std::io::Error::other)?;
        let mut plain = PlainBuffer::zeroed(len);
        file.read_exact(&mut plain)?;
        if file.read(&mut [0u8; 1])? != 0 {
            return Err(std::io::Error::other("the file grew while it was read"));
        }
        return Ok(plain);
    }
    let mut pieces: Vec<Zeroizing<Vec<u8>>> = Vec::new();
    loop {
        let mut piece = Zeroizing::new(vec![0u8; PIECE]);
        let mut filled = 0;
        while filled < PIECE {
            match file.read(&mut piece[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        // Shrinking in place keeps the allocation: nothing is copied.
        piece.truncate(filled);
        let ended = filled < PIECE;
        pieces.push(piece);
        if ended {
            break;
        }
    }
    let mut plain = PlainBuffer::zeroed(pieces.iter().map(|p| p.len()).sum());
    let mut at = 0;
    for piece in &pieces {
        plain[at..at + piece.len()].copy_from_slice(piece);
        at += piece.len();
    }
    Ok(plain)
}
