//! The client engine with its I/O: fetches the sentinel's attestation bundle through the
//! relay, verifies it against the client policy before the first request and whenever the
//! evidence changes, sends each request encapsulated and releases an answer only once its
//! receipt verified ([`crate::session`]).

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::json;
use trustbridge_protocol::attestation_bundle::{
    AttestationBundle, BundleFormatError, MAX_BUNDLE_LEN,
};
use trustbridge_protocol::ohttp::{
    ATTESTATION_PATH, CHUNKED_REQUEST_MEDIA_TYPE, CHUNKED_RESPONSE_MEDIA_TYPE, GATEWAY_PATH,
    MAX_REQUEST_LEN, REQUEST_MEDIA_TYPE, RESPONSE_MEDIA_TYPE,
};
use trustbridge_protocol::receipt::{Receipt, SALT_LEN};
use trustbridge_transport::Endpoint;
use trustbridge_transport::http1::{Http1Pool, PoolConfig};
use trustbridge_verifier::client_policy::{BundleRefused, ClientPolicy};
use trustbridge_verifier::{Checks, TrustRoots};

use crate::prepared::Preparer;
use crate::session::{ChainTracker, Request, Session, VerificationError, VerifiedAnswer};
use crate::stream::{ByteReader, StreamedAnswer};

/// Why a request got no verified answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The relay URL is not usable.
    #[error("relay URL {0:?} is not usable: give http://HOST:PORT")]
    RelayUrl(String),
    /// The relay could not be reached or broke the connection.
    #[error("the relay is unreachable: {0}")]
    Unreachable(String),
    /// The relay (or the sentinel behind it) answered with an error status.
    #[error("the relay answered {status} to {what}")]
    RelayStatus {
        /// The HTTP status.
        status: u16,
        /// What was asked.
        what: &'static str,
    },
    /// An answer larger than the limit.
    #[error("the relay's answer to {0} is larger than the limit")]
    TooLarge(&'static str),
    /// The request is larger than a gateway accepts.
    #[error("the request is larger than {MAX_REQUEST_LEN} bytes")]
    RequestTooLarge,
    /// The bundle is not an attestation bundle.
    #[error("the attestation bundle is malformed: {0}")]
    Bundle(#[from] BundleFormatError),
    /// The client policy refuses the sentinel.
    #[error("the sentinel's attestation is refused ({check}): {source}", check = .0.check(), source = .0)]
    Refused(#[from] BundleRefused),
    /// The answer failed verification.
    #[error("the answer failed verification ({check}): {source}", check = .0.check(), source = .0)]
    Verification(#[from] VerificationError),
}

impl ClientError {
    /// The check that failed, when the failure is a verification (attestation or
    /// answer) rather than transport.
    pub fn failed_check(&self) -> Option<&'static str> {
        match self {
            Self::Refused(e) => Some(e.check()),
            Self::Verification(e) => Some(e.check()),
            Self::Bundle(_) => Some("attestation bundle format"),
            _ => None,
        }
    }
}

/// Where the client talks and what it accepts.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The relay's public address, `http://HOST:PORT`.
    pub relay: String,
    /// The client policy.
    pub policy: ClientPolicy,
    /// Time for one answer.
    pub timeout: Duration,
    /// Largest encapsulated answer read.
    pub max_response_len: usize,
    /// Requests' HPKE contexts kept set up ahead, on a thread of the client's own, for
    /// the current sentinel's key configuration (0: each request sets up its own): a
    /// fresh ephemeral key and its Diffie-Hellman with the gateway's key, most of what
    /// encapsulation costs, off the request's path ([`crate::session::Prepared`]). At
    /// most 64 are kept, whatever is asked.
    pub prepared: usize,
}

impl ClientConfig {
    /// A configuration with the default limits (300 s, 16 MiB) and 8 contexts prepared
    /// ahead.
    pub fn new(relay: impl Into<String>, policy: ClientPolicy) -> Self {
        Self {
            relay: relay.into(),
            policy,
            timeout: Duration::from_secs(300),
            max_response_len: (16 << 20) + 4096,
            prepared: 8,
        }
    }
}

/// What the client has checked, for `GET /trustbridge/status`.
#[derive(Debug, Default)]
struct Record {
    checks: Checks,
    verified_at: Option<SystemTime>,
    refused: Option<String>,
    bundles_verified: u64,
    answers_verified: u64,
    verification_failures: u64,
    last_failure: Option<String>,
}

/// The client engine.
pub struct Client {
    config: ClientConfig,
    base: String,
    roots: TrustRoots,
    http: Http1Pool<Full<Bytes>>,
    session: RwLock<Option<Arc<Session>>>,
    chain: Arc<ChainTracker>,
    record: Mutex<Record>,
    refreshing: tokio::sync::Mutex<()>,
    preparer: Preparer,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({})", self.base)
    }
}

impl Client {
    /// A client of the relay in `config` (nothing is fetched yet).
    pub fn new(config: ClientConfig) -> Result<Self, ClientError> {
        let base = config.relay.trim_end_matches('/').to_owned();
        let authority = base
            .strip_prefix("http://")
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or_else(|| ClientError::RelayUrl(config.relay.clone()))?;
        let bad = || ClientError::RelayUrl(config.relay.clone());
        let authority: hyper::http::uri::Authority = authority.parse().map_err(|_| bad())?;
        let port = authority.port_u16().unwrap_or(80);
        // Host as a browser sends it: no user information, no default port.
        let host = match port {
            80 => authority.host().to_owned(),
            _ => format!("{}:{port}", authority.host()),
        };
        let host = hyper::header::HeaderValue::from_str(&host).map_err(|_| bad())?;
        let endpoint = Endpoint::Tcp {
            host: authority.host().to_owned(),
            port,
        };
        let http = Http1Pool::new(endpoint, host, PoolConfig::default());
        Ok(Self {
            roots: config.policy.trust_roots(),
            base,
            http,
            session: RwLock::new(None),
            chain: Arc::new(ChainTracker::new()),
            record: Mutex::new(Record::default()),
            refreshing: tokio::sync::Mutex::new(()),
            preparer: Preparer::new(config.prepared),
            config,
        })
    }

    /// The relay's base URL.
    pub fn relay(&self) -> &str {
        &self.base
    }

    /// The configuration (limits: time for one answer, largest answer).
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current verified session, if any (nothing is fetched).
    pub fn current_session(&self) -> Option<Arc<Session>> {
        self.current()
    }

    fn current(&self) -> Option<Arc<Session>> {
        self.session
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The verified session, fetching and verifying the bundle when there is none.
    pub async fn session(&self) -> Result<Arc<Session>, ClientError> {
        match self.current() {
            Some(s) => Ok(s),
            None => self.refresh(None).await,
        }
    }

    /// Fetches the sentinel's bundle and verifies it against the policy. `stale`: the
    /// session found out of date (another task may have refreshed it meanwhile).
    pub async fn refresh(&self, stale: Option<&Arc<Session>>) -> Result<Arc<Session>, ClientError> {
        let _one = self.refreshing.lock().await;
        if let Some(current) = self.current()
            && stale.is_none_or(|s| !Arc::ptr_eq(s, &current))
        {
            return Ok(current);
        }
        let result = self.fetch_and_verify().await;
        let mut record = self.record();
        match result {
            Ok((session, checks)) => {
                record.checks = checks;
                record.verified_at = Some(session.verified().verified_at);
                record.refused = None;
                record.bundles_verified += 1;
                drop(record);
                let session = Arc::new(session);
                *self.session.write().unwrap_or_else(|p| p.into_inner()) = Some(session.clone());
                tracing::info!(
                    platform = %session.verified().bundle.platform,
                    model = %hex::encode(session.verified().model),
                    "sentinel attestation verified"
                );
                Ok(session)
            }
            Err((e, checks)) => {
                record.checks = checks;
                record.refused = Some(e.to_string());
                record.verification_failures += 1;
                record.last_failure = Some(e.to_string());
                drop(record);
                *self.session.write().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::warn!(error = %e, "sentinel attestation refused");
                Err(e)
            }
        }
    }

    async fn fetch_and_verify(&self) -> Result<(Session, Checks), (ClientError, Checks)> {
        let mut checks = Checks::default();
        let body = self
            .get(ATTESTATION_PATH, "the attestation bundle", MAX_BUNDLE_LEN)
            .await
            .map_err(|e| (e, Checks::default()))?;
        let bundle =
            AttestationBundle::from_json(&body).map_err(|e| (e.into(), Checks::default()))?;
        match self
            .config
            .policy
            .verify_bundle(bundle, &self.roots, SystemTime::now(), &mut checks)
        {
            Ok(v) => Ok((Session::new(v, self.chain.clone()), checks)),
            Err(e) => Err((e.into(), checks)),
        }
    }

    /// Sends `request` and returns the answer once its receipt verified. A refreshed
    /// bundle is fetched when the receipt names evidence newer than the session's, and
    /// once when the gateway cannot decapsulate (the sentinel restarted with new keys).
    pub async fn send(&self, request: &Request) -> Result<VerifiedAnswer, ClientError> {
        let result = self.send_inner(request).await;
        let mut record = self.record();
        match &result {
            Ok(_) => record.answers_verified += 1,
            Err(e) if e.failed_check().is_some() => {
                record.verification_failures += 1;
                record.last_failure = Some(e.to_string());
            }
            Err(_) => {}
        }
        result
    }

    async fn send_inner(&self, request: &Request) -> Result<VerifiedAnswer, ClientError> {
        let mut session = self.session().await?;
        let mut retried = false;
        loop {
            let prepared = self.preparer.take(&session.verified().bundle.ohttp_keys);
            let sealed = session.seal_prepared(request, prepared)?;
            if sealed.encapsulated.len() > MAX_REQUEST_LEN {
                return Err(ClientError::RequestTooLarge);
            }
            let answer = self
                .post(sealed.encapsulated, REQUEST_MEDIA_TYPE, RESPONSE_MEDIA_TYPE)
                .await;
            let body = match answer {
                // The gateway could not decapsulate: new keys after a restart, perhaps.
                Err(ClientError::RelayStatus { status: 400, .. }) if !retried => {
                    retried = true;
                    session = self.refresh(Some(&session)).await?;
                    continue;
                }
                other => other?,
            };
            let opened = sealed.pending.open(&body)?;
            let evidence = session.evidence_digest();
            if opened.claimed_evidence().is_some_and(|e| e != evidence) {
                // The sentinel refreshed its evidence: verify the current bundle, then
                // the receipt against it.
                session = self.refresh(Some(&session)).await?;
            }
            return Ok(session.check(opened)?);
        }
    }

    /// Sends `request` as a chunked request and returns its answer as it streams: the
    /// head is read; content comes from [`StreamedAnswer::next`], unverified until
    /// [`Self::finish_streamed`] (with the session returned here) succeeds.
    pub async fn send_streamed(
        &self,
        request: &Request,
    ) -> Result<(Arc<Session>, StreamedAnswer), ClientError> {
        let mut session = self.session().await?;
        let mut retried = false;
        loop {
            let sealed = session.seal_chunked(request)?;
            if sealed.encapsulated.len() > MAX_REQUEST_LEN {
                return Err(ClientError::RequestTooLarge);
            }
            let src = match self.post_stream(sealed.encapsulated).await {
                Err(ClientError::RelayStatus { status: 400, .. }) if !retried => {
                    retried = true;
                    session = self.refresh(Some(&session)).await?;
                    continue;
                }
                other => other?,
            };
            let mut answer = sealed.pending.open(src)?;
            answer.head().await?;
            return Ok((session, answer));
        }
    }

    /// Checks a streamed answer whose content has all been read: the end of the stream and
    /// the receipt in its trailer (refreshing the bundle first when the receipt names newer
    /// evidence).
    pub async fn finish_streamed(
        &self,
        session: Arc<Session>,
        answer: &mut StreamedAnswer,
    ) -> Result<(Receipt, [u8; SALT_LEN]), ClientError> {
        let mut session = session;
        let evidence = session.evidence_digest();
        if answer.claimed_evidence().is_some_and(|e| e != evidence) {
            session = self.refresh(Some(&session)).await?;
        }
        let result = answer.finish(&session).map_err(ClientError::from);
        let mut record = self.record();
        match &result {
            Ok(_) => record.answers_verified += 1,
            Err(e) => {
                record.verification_failures += 1;
                record.last_failure = Some(e.to_string());
            }
        }
        result
    }

    /// Records a streamed answer that failed before its end.
    pub fn record_failure(&self, e: &ClientError) {
        let mut record = self.record();
        record.verification_failures += 1;
        record.last_failure = Some(e.to_string());
    }

    async fn post_stream(&self, body: Vec<u8>) -> Result<ByteReader, ClientError> {
        use futures_util::TryStreamExt;
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let what = "the chunked request";
        let req = hyper::Request::post(GATEWAY_PATH)
            .header("content-type", CHUNKED_REQUEST_MEDIA_TYPE)
            .header("accept", CHUNKED_RESPONSE_MEDIA_TYPE)
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| ClientError::RelayUrl(self.base.clone()))?;
        let resp = tokio::time::timeout(self.config.timeout, self.http.send(req))
            .await
            .map_err(|_| ClientError::Unreachable(format!("no answer to {what} in time")))?
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(ClientError::RelayStatus { status, what });
        }
        let stream = resp
            .into_body()
            .into_data_stream()
            .map_err(std::io::Error::other);
        Ok(Box::new(tokio_util::io::StreamReader::new(stream).compat()))
    }

    async fn get(
        &self,
        path: &str,
        what: &'static str,
        limit: usize,
    ) -> Result<Vec<u8>, ClientError> {
        let req = hyper::Request::get(path)
            .body(Full::new(Bytes::new()))
            .map_err(|_| ClientError::RelayUrl(self.base.clone()))?;
        self.exchange(req, what, limit).await
    }

    async fn post(
        &self,
        body: Vec<u8>,
        content_type: &str,
        accept: &str,
    ) -> Result<Vec<u8>, ClientError> {
        let req = hyper::Request::post(GATEWAY_PATH)
            .header("content-type", content_type)
            .header("accept", accept)
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| ClientError::RelayUrl(self.base.clone()))?;
        self.exchange(
            req,
            "the encapsulated request",
            self.config.max_response_len,
        )
        .await
    }

    async fn exchange(
        &self,
        req: hyper::Request<Full<Bytes>>,
        what: &'static str,
        limit: usize,
    ) -> Result<Vec<u8>, ClientError> {
        let work = async {
            let resp = self
                .http
                .send(req)
                .await
                .map_err(|e| ClientError::Unreachable(e.to_string()))?;
            let status = resp.status().as_u16();
            if status != 200 {
                return Err(ClientError::RelayStatus { status, what });
            }
            let body = Limited::new(resp.into_body(), limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        ClientError::TooLarge(what)
                    } else {
                        ClientError::Unreachable(e.to_string())
                    }
                })?;
            Ok(body.to_bytes().to_vec())
        };
        tokio::time::timeout(self.config.timeout, work)
            .await
            .map_err(|_| ClientError::Unreachable(format!("no answer to {what} in time")))?
    }

    /// What the client has verified, as JSON: the sentinel's evidence summary, each check
    /// and when, and counts of verified answers and failures.
    pub fn status(&self) -> serde_json::Value {
        let session = self.current();
        let record = self.record();
        let secs = |t: Option<SystemTime>| {
            t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs())
        };
        let sentinel = session.as_ref().map(|s| {
            let v = s.verified();
            let b = &v.bundle;
            json!({
                "platform": b.platform.name(),
                "simulated": v.evidence.simulated,
                "debug": v.evidence.debug,
                "measurements": v.evidence.measurements.iter().map(|(k, m)| (k.clone(), json!(hex::encode(m)))).collect::<serde_json::Map<_, _>>(),
                "model": hex::encode(v.model),
                "receipt_key": hex::encode(b.receipt_key),
                "ohttp_keys_sha256": hex::encode(b.binding.ohttp_keys_sha256),
                "broker_key": hex::encode(b.binding.broker_key),
                "provider_key": b.binding.provider_key.map(hex::encode),
                "evidence_digest": hex::encode(b.evidence_digest()),
            })
        });
        json!({
            "relay": self.base,
            "verified": session.is_some(),
            "sentinel": sentinel,
            "refused": record.refused,
            "verified_at": secs(record.verified_at),
            "checks": record.checks.as_slice().iter().map(|c| json!({"name": c.name, "passed": c.passed, "detail": c.detail})).collect::<Vec<_>>(),
            "bundles_verified": record.bundles_verified,
            "answers_verified": record.answers_verified,
            "receipts_remembered": self.chain.len(),
            "verification_failures": record.verification_failures,
            "last_failure": record.last_failure,
        })
    }
}
