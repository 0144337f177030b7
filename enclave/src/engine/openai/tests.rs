//! The request checks and answer shapes of the OpenAI API, tested.
#![allow(clippy::unwrap_used)]
use super::*;

const M: &str = "acme/llm@v1";

#[test]
fn a_chat_request_is_checked_before_any_work() {
    let ok = chat_request(
        br#"{"model":"acme/llm@v1","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"max_tokens":5,"stop":"\n","seed":-1,"stream":true,"stream_options":{"include_usage":true},"user":"u1"}"#,
        M,
    )
    .unwrap();
    assert_eq!(ok.messages[0].content, "hi");
    assert_eq!(ok.params.max_tokens, 5);
    assert_eq!(ok.params.stop, vec!["\n".to_owned()]);
    assert_eq!(ok.params.seed, u64::MAX);
    assert!(ok.seeded && ok.stream && ok.include_usage);
    let refused = |body: &str| chat_request(body.as_bytes(), M).unwrap_err();
    assert_eq!(refused("{").status, 400);
    assert_eq!(
        refused(r#"{"model":"other","messages":[{"role":"user","content":"x"}]}"#).code,
        Some("model_not_found")
    );
    for (body, param) in [
        (r#"{"model":"acme/llm@v1","messages":[]}"#, "messages"),
        (
            r#"{"model":"acme/llm@v1","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
            "max_tokens",
        ),
        (
            r#"{"model":"acme/llm@v1","messages":[{"role":"user","content":"x"}],"n":2}"#,
            "n",
        ),
        (
            r#"{"model":"acme/llm@v1","messages":[{"role":"user","content":"x"}],"temperature":3}"#,
            "temperature",
        ),
        (
            r#"{"model":"acme/llm@v1","messages":[{"role":"user","content":"x"}],"top_p":0}"#,
            "top_p",
        ),
        (
            r#"{"model":"acme/llm@v1","messages":[{"role":"user","content":"x"}],"stop":["a","b","c","d","e"]}"#,
            "stop",
        ),
        (
            r#"{"model":"acme/llm@v1","messages":[{"role":"user","content":"x"}],"tools":[{}]}"#,
            "tools",
        ),
        (
            r#"{"model":"acme/llm@v1","messages":[{"role":"user","content":[{"type":"image_url"}]}]}"#,
            "messages",
        ),
        (
            r#"{"model":"acme/llm@v1","messages":[{"role":"tool","content":"x"}]}"#,
            "messages",
        ),
        (
            r#"{"model":"acme/llm@v1","messages":[{"role":"user","content":"x"}],"logit_bias":{"50256":-100}}"#,
            "logit_bias",
        ),
        (
            r#"{"model":"acme/llm@v1","messages":[{"role":"user","content":"x"}],"presence_penalty":0.5}"#,
            "presence_penalty",
        ),
        (
            r#"{"model":"acme/llm@v1","messages":[{"role":"user","content":"x"}],"frequency_penalty":-1}"#,
            "frequency_penalty",
        ),
        (
            r#"{"model":"acme/llm@v1","messages":[{"role":"user","content":"x"}],"tool_choice":"auto"}"#,
            "tool_choice",
        ),
        (
            r#"{"model":"acme/llm@v1","messages":[{"role":"user","content":"x"}],"functions":[{"name":"f"}]}"#,
            "functions",
        ),
    ] {
        assert_eq!(refused(body).param, Some(param), "{body}");
    }
    let huge = format!(
        r#"{{"model":"acme/llm@v1","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "a".repeat(MAX_TEXT + 1)
    );
    assert_eq!(refused(&huge).code, Some("context_length_exceeded"));
    assert_eq!(refused(&" ".repeat(MAX_BODY + 1)).status, 413);
    // Neutral values of the unsupported options, and nulls, are accepted.
    let neutral = chat_request(
        br#"{"model":"acme/llm@v1","messages":[{"role":"user","content":"x"}],"presence_penalty":0,"frequency_penalty":0.0,"logit_bias":{},"tool_choice":"none","functions":null,"stream":null,"logprobs":null,"stream_options":{"include_usage":null}}"#,
        M,
    )
    .unwrap();
    assert!(!neutral.stream && !neutral.include_usage);
    assert!(neutral.params.fit_context, "no max_tokens: fit the context");
    // The error names no content.
    let secret = r#"{"model":"acme/llm@v1","messages":"my secret prompt"}"#;
    assert!(!refused(secret).message.contains("secret"));
    let secret = r#"{"model":"acme/llm@v1","messages":[{"role":"user","content":7}],"stop":{"my":"secret"}}"#;
    assert!(!refused(secret).message.contains("secret"));
    assert!(
        refused(r#"{"messages":[]}"#)
            .message
            .contains("missing field model")
    );
}

#[test]
fn embeddings_requests_and_answers() {
    let r = embeddings_request(
        br#"{"model":"acme/llm@v1","input":"hi","encoding_format":"base64"}"#,
        M,
        384,
    )
    .unwrap();
    assert_eq!(r.inputs, vec!["hi".to_owned()]);
    assert!(r.base64);
    for body in [
        r#"{"model":"acme/llm@v1","input":[1,2,3]}"#,
        r#"{"model":"acme/llm@v1","input":[]}"#,
        r#"{"model":"acme/llm@v1","input":""}"#,
        r#"{"model":"acme/llm@v1","input":"x","dimensions":10}"#,
        r#"{"model":"acme/llm@v1","input":"x","encoding_format":"hex"}"#,
    ] {
        assert_eq!(
            embeddings_request(body.as_bytes(), M, 384)
                .unwrap_err()
                .status,
            400,
            "{body}"
        );
    }
    let out: Value =
        serde_json::from_slice(&embeddings_response(M, &[vec![1.0, -0.5]], 3, true)).unwrap();
    let b64 = out["data"][0]["embedding"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(
        bytes,
        [1.0f32.to_le_bytes(), (-0.5f32).to_le_bytes()].concat()
    );
    assert_eq!(out["usage"]["prompt_tokens"], 3);
}

#[test]
fn chunks_and_errors_have_openai_shapes() {
    let c = chat_chunk("id", 1, M, json!({"content": "hi"}), None, None);
    let text = String::from_utf8(c).unwrap();
    assert!(text.starts_with("data: {") && text.ends_with("}\n\n"));
    let v: Value = serde_json::from_str(text.trim_start_matches("data: ").trim()).unwrap();
    assert_eq!(v["choices"][0]["delta"]["content"], "hi");
    assert!(v["choices"][0]["finish_reason"].is_null());
    let u = chat_chunk("id", 1, M, json!({}), None, Some(usage(3, 4)));
    let v: Value = serde_json::from_slice(&u[6..]).unwrap();
    assert_eq!(v["usage"]["total_tokens"], 7);
    assert_eq!(v["choices"], json!([]));
    let e: Value = serde_json::from_slice(&ApiError::invalid(Some("x"), "bad").body()).unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert_eq!(e["error"]["param"], "x");
}
